"""An in-process browser for page tests: Starlette's TestClient over the whole app, with
helpers that parse HTML and fill forms the way a person would (CSRF tokens included)."""

from __future__ import annotations

from typing import Any

from bs4 import BeautifulSoup
from starlette.testclient import TestClient

from mailseen.services.instance import Instance
from mailseen.web.app import MailseenApp

PASSWORD = "correct horse battery"


class Page:
    def __init__(self, response: Any) -> None:
        self.response = response
        self.status = response.status_code
        self.soup = BeautifulSoup(response.text, "html.parser")

    def form(self, action: str) -> dict[str, str]:
        form = self.soup.find("form", attrs={"action": action})
        assert form is not None, f"no form posting to {action}"
        values: dict[str, str] = {}
        for field in form.find_all(["input", "select", "textarea"]):
            name = field.get("name")
            if not name:
                continue
            if field.name == "select":
                chosen = field.find("option", selected=True) or field.find("option")
                values[name] = chosen.get("value", "") if chosen else ""
            elif field.get("type") in ("checkbox", "radio"):
                if field.has_attr("checked"):
                    values[name] = field.get("value", "on")
            else:
                values[name] = field.get("value", "") or field.text
        return values

    def text(self, selector: str) -> str:
        node = self.soup.select_one(selector)
        assert node is not None, f"nothing matches {selector}"
        return " ".join(node.get_text(" ").split())

    def all(self, selector: str) -> list[Any]:
        return list(self.soup.select(selector))


class WebClient:
    def __init__(self, instance: Instance) -> None:
        self.client = TestClient(MailseenApp(instance, run_worker=False),
                                 base_url="http://testserver", follow_redirects=True)

    def __enter__(self) -> WebClient:
        self.client.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.__exit__(*exc)

    def get(self, url: str, **kw: Any) -> Page:
        return Page(self.client.get(url, **kw))

    def submit(self, page: Page, action: str, **fields: Any) -> Page:
        """Post ``action``'s form from ``page`` with ``fields`` changed."""
        data = {**page.form(action), **{k: v for k, v in fields.items() if v is not None}}
        return Page(self.client.post(action, data=data))

    def sign_in(self, email: str, password: str = PASSWORD) -> Page:
        page = self.get("/login")
        return self.submit(page, "/login", email=email, password=password)
