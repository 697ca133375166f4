"""The refusal line at the bottom of tracked mail, and the words of the page it links to,
in the languages a mailbox can be set to.

The line is spliced into a copy's HTML beside its pixel; its link carries the copy's own
signed token, so the page knows whose tracking to stop without the recipient signing in.
Everything here is ASCII once built (other letters as HTML character references), because
it goes into message parts of any charset."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

__all__ = ["LANGUAGES", "PageWords", "page_words", "refusal_line"]


@dataclass(frozen=True)
class PageWords:
    line: str  # the sentence of the line in the mail, before its link
    link: str  # the link's text
    title: str
    intro: str  # "{team}" is the mailbox's name
    state_refused: str
    state_granted: str
    state_unknown: str
    refuse: str
    allow: str
    done_refused: str
    done_granted: str
    notice: str
    invalid: str


_WORDS: dict[str, PageWords] = {
    "en": PageWords(
        line="This message contains an image that tells the sender when it is opened.",
        link="Don't track me",
        title="Tracking of your e-mail opens",
        intro="{team} uses an image in its e-mail to learn when you open it.",
        state_refused="You have refused this tracking.",
        state_granted="You have agreed to this tracking.",
        state_unknown="You have not said whether you agree to it.",
        refuse="Refuse tracking",
        allow="Allow tracking",
        done_refused=("Done: {team} will no longer record when you open its e-mail, "
                      "including messages you already have. You will still receive its mail."),
        done_granted="Done: {team} may record when you open its e-mail.",
        notice="Privacy notice",
        invalid="This link is not valid, or the message it came from no longer exists."),
    "fr": PageWords(
        line=("Ce message contient une image qui indique \u00e0 l'exp\u00e9diteur quand il "
              "est ouvert."),
        link="Ne pas me suivre",
        title="Suivi de l'ouverture de vos e-mails",
        intro="{team} utilise une image dans ses e-mails pour savoir quand vous les ouvrez.",
        state_refused="Vous avez refus\u00e9 ce suivi.",
        state_granted="Vous avez accept\u00e9 ce suivi.",
        state_unknown="Vous n'avez pas indiqu\u00e9 si vous l'acceptez.",
        refuse="Refuser le suivi",
        allow="Accepter le suivi",
        done_refused=("C'est fait : {team} n'enregistrera plus l'ouverture de ses e-mails, "
                      "y compris ceux que vous avez d\u00e9j\u00e0. Vous continuerez \u00e0 "
                      "recevoir ses messages."),
        done_granted="C'est fait : {team} peut enregistrer l'ouverture de ses e-mails.",
        notice="Politique de confidentialit\u00e9",
        invalid="Ce lien n'est pas valide, ou le message d'o\u00f9 il vient n'existe plus."),
    "it": PageWords(
        line="Questo messaggio contiene un'immagine che indica al mittente quando viene aperto.",
        link="Non tracciarmi",
        title="Tracciamento dell'apertura delle tue e-mail",
        intro="{team} usa un'immagine nelle sue e-mail per sapere quando le apri.",
        state_refused="Hai rifiutato questo tracciamento.",
        state_granted="Hai acconsentito a questo tracciamento.",
        state_unknown="Non hai indicato se acconsenti.",
        refuse="Rifiuta il tracciamento",
        allow="Consenti il tracciamento",
        done_refused=("Fatto: {team} non registrer\u00e0 pi\u00f9 quando apri le sue e-mail, "
                      "anche quelle che hai gi\u00e0. Continuerai a ricevere i suoi messaggi."),
        done_granted="Fatto: {team} pu\u00f2 registrare quando apri le sue e-mail.",
        notice="Informativa sulla privacy",
        invalid=("Questo link non \u00e8 valido, o il messaggio da cui proviene non esiste "
                 "pi\u00f9.")),
    "de": PageWords(
        line="Diese Nachricht enth\u00e4lt ein Bild, das dem Absender meldet, wann sie "
             "ge\u00f6ffnet wird.",
        link="Nicht verfolgen",
        title="Verfolgung des \u00d6ffnens Ihrer E-Mails",
        intro="{team} verwendet ein Bild in seinen E-Mails, um zu erfahren, wann Sie sie "
              "\u00f6ffnen.",
        state_refused="Sie haben diese Verfolgung abgelehnt.",
        state_granted="Sie haben dieser Verfolgung zugestimmt.",
        state_unknown="Sie haben nicht angegeben, ob Sie zustimmen.",
        refuse="Verfolgung ablehnen",
        allow="Verfolgung erlauben",
        done_refused=("Erledigt: {team} zeichnet nicht mehr auf, wann Sie seine E-Mails "
                      "\u00f6ffnen, auch bei Nachrichten, die Sie schon haben. Sie erhalten "
                      "seine E-Mails weiterhin."),
        done_granted="Erledigt: {team} darf aufzeichnen, wann Sie seine E-Mails \u00f6ffnen.",
        notice="Datenschutzhinweis",
        invalid="Dieser Link ist ung\u00fcltig, oder die Nachricht, aus der er stammt, "
                "existiert nicht mehr."),
    "es": PageWords(
        line="Este mensaje contiene una imagen que indica al remitente cu\u00e1ndo se abre.",
        link="No rastrearme",
        title="Seguimiento de la apertura de sus correos",
        intro="{team} usa una imagen en sus correos para saber cu\u00e1ndo los abre.",
        state_refused="Ha rechazado este seguimiento.",
        state_granted="Ha aceptado este seguimiento.",
        state_unknown="No ha indicado si lo acepta.",
        refuse="Rechazar el seguimiento",
        allow="Permitir el seguimiento",
        done_refused=("Hecho: {team} ya no registrar\u00e1 cu\u00e1ndo abre sus correos, "
                      "tampoco los que ya tiene. Seguir\u00e1 recibiendo sus mensajes."),
        done_granted="Hecho: {team} puede registrar cu\u00e1ndo abre sus correos.",
        notice="Aviso de privacidad",
        invalid="Este enlace no es v\u00e1lido, o el mensaje del que procede ya no existe."),
}

LANGUAGES: tuple[str, ...] = tuple(_WORDS)


def page_words(language: str) -> PageWords:
    """The words in ``language`` (English for one not offered)."""
    return _WORDS.get(language, _WORDS["en"])


def _ascii_html(text: str) -> str:
    return escape(text).encode("ascii", "xmlcharrefreplace").decode("ascii")


def refusal_line(url: str, language: str, text: str = "") -> str:
    """The line as spliced into a copy's HTML: the mailbox's own sentence (``text``) or the
    default one in its language, then the link to the refusal page. Small and grey, after
    the message, like the unsubscribe line it sits near."""
    words = page_words(language)
    sentence = _ascii_html(text.strip() or words.line)
    return ('<p style="margin:16px 0 0 0;font-size:11px;line-height:1.4;color:#777777;'
            f'font-family:sans-serif">{sentence} <a href="{_ascii_html(url)}" '
            f'style="color:#777777">{_ascii_html(words.link)}</a></p>')
