"""The crawler-user-agents list, compiled for speed, answers as the package itself does."""

from __future__ import annotations

from crawleruseragents import CRAWLER_USER_AGENTS_DATA, is_crawler

from mailseen.core.bots import BotList, load_bots


def test_every_recorded_crawler_instance_gets_the_packages_answer() -> None:
    bots = load_bots()
    instances = [i for item in CRAWLER_USER_AGENTS_DATA for i in item.get("instances", [])]
    assert len(instances) > 1000
    assert [bool(bots.match(i)) for i in instances] == [is_crawler(i) for i in instances]
    assert bots.source.startswith("crawler-user-agents ")


def test_browsers_and_mail_clients_are_not_crawlers_and_regex_patterns_still_work() -> None:
    bots = load_bots()
    for agent in ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
                  "Gecko) Chrome/120.0.0.0 Safari/537.36",
                  "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.6.0",
                  "SomeMail/12.3 (Android 14)"):
        assert bots.match(agent) is None, agent
    small = BotList(["Plainbot/", "(^| )PTST/", "Chirp|gotosocial", "[wW]get"], "test")
    assert small.match("x Plainbot/1.0") == "Plainbot/"
    assert small.match("Chrome/120 PTST/2402") == "(^| )PTST/"
    assert small.match("GoToSocial gotosocial/0.1") == "gotosocial"
    assert small.match("wget/1.21") == "[wW]get"
    assert small.match("Xwget") == "[wW]get" and small.match("PTSTx") is None
