"""The message frame's policy: remote images only by their exact URLs, never ours."""

from __future__ import annotations

from mailseen.web.site.framecsp import frame_csp


def ours(url: str) -> bool:
    return "/t/" in url


def _img_src(policy: str) -> list[str]:
    [directive] = [d.strip() for d in policy.split(";") if d.strip().startswith("img-src")]
    return directive.split()[1:]


def test_without_images_nothing_remote_loads() -> None:
    html = '<img src="https://images.example/a.png">'
    assert _img_src(frame_csp(html, images=False, is_own=ours, own_hosts=())) == [
        "data:", "cid:"]


def test_each_image_is_allowed_by_its_exact_url_and_no_more() -> None:
    html = ('<p>x</p><img alt="a" src="https://images.example/a.png?size=2&amp;x=1">'
            '<img src="http://Images.example:8080/b%20c;d,e.gif"><img src="https://images.'
            'example/a.png"><img>')
    assert _img_src(frame_csp(html, images=True, is_own=ours, own_hosts=())) == [
        "data:", "cid:", "https://images.example/a.png",
        "http://images.example:8080/b%20c%3Bd%2Ce.gif"]


def test_our_urls_and_anything_on_our_hosts_stay_out() -> None:
    html = ('<img src="https://cdn.example/t/./x.gif"><img src="https://track.example/logo.png">'
            '<img src="https://app.example/x.png"><img src="https://cdn.example/ok.png">')
    policy = frame_csp(html, images=True, is_own=ours,
                       own_hosts=("https://track.example", "https://app.example/messages/1/body"))
    assert _img_src(policy) == ["data:", "cid:", "https://cdn.example/ok.png"]


def test_urls_that_cannot_be_a_source_are_left_out() -> None:
    html = '<img src="https://[::1]/a.png"><img src="data:image/png;base64,AAAA">'
    assert _img_src(frame_csp(html, images=True, is_own=ours, own_hosts=())) == [
        "data:", "cid:"]
