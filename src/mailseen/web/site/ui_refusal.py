"""The page a recipient reaches from the refusal line in tracked mail: no sign-in, no
JavaScript. It shows where they stand and offers to refuse (or allow) tracking; only a POST
from the page changes anything, so a scanner that follows every link in a message refuses
nothing on the recipient's behalf.

The POST carries the form's CSRF token like every form of the app (the pre-sign-in token
that the sign-in page uses too), and a form sent from another site is also refused by its
Origin."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...core.refusal import page_words
from ...errors import InvalidInput, NotFound
from ...services.consents import LinkTarget
from .ui import instance_of, read_form, render

__all__ = ["routes"]


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if request.headers.get("sec-fetch-site") == "cross-site":
        return False
    if origin is None or origin == "null":
        # Old browsers send no Origin; "null" comes from privacy-minded ones and from
        # pages opened from a mail client's local file: a POST still needs this form.
        return True
    ours = {urlsplit(instance_of(request).settings.base_url)._replace(path="").geturl(),
            f"{request.url.scheme}://{request.url.netloc}"}
    return origin.rstrip("/") in {o.rstrip("/") for o in ours}


async def refusal(request: Request) -> Response:
    token = request.path_params["token"]
    consents = instance_of(request).consents
    form = await read_form(request) if request.method == "POST" else None
    try:
        target = consents.link_target(token)
    except NotFound:
        words = page_words("en")
        return render(request, "refusal.html", 404, words=words, target=None, team="",
                      lang="en", done=None, token=token)
    done = None
    status = 200
    if form is not None:
        choice = form.get("state")
        if not _same_origin(request):
            status = 403
        else:
            try:
                target = consents.answer_link(token, str(choice or ""))
                done = target.state
            except InvalidInput:
                status = 400
    return _page(request, target, done, status, token)


def _page(request: Request, target: LinkTarget, done: str | None, status: int,
          token: str) -> Response:
    box = target.mailbox
    words = page_words(box.language)
    team = box.display_name or box.address
    response = render(request, "refusal.html", status, words=words, target=target, team=team,
                      lang=box.language, done=done, token=token)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Robots-Tag"] = "noindex"
    return response


routes = [Route("/r/{token}", refusal, methods=["GET", "POST"])]
