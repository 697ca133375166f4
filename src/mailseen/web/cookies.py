"""The names of the cookies the site sets. The pixel reads the session cookie's name too: a
browser that carries it belongs to the team, and its fetches are not the recipient's views."""

SESSION_COOKIE = "mailseen_session"
CSRF_COOKIE = "mailseen_csrf"
