"""Running `mailseen` in-process against the test database, and reading its answers."""

from __future__ import annotations

from click.testing import CliRunner, Result

from mailseen.cli import main


class Cli:
    """Runs `mailseen` in-process against the test database."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: str, input: bytes | str | None = None) -> Result:
        return CliRunner().invoke(main, list(args), input=input, env=self.env,
                                  catch_exceptions=False)


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output + result.stderr
    return result.stdout


def error(result: Result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mailseen: error: ")
    assert "Traceback" not in result.output
    return lines[0]


