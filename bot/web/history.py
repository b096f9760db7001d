"""The web chat's conversations: each web user's questions and the replies the page showed, kept
server-side so that the sidebar lists them and a reload brings a conversation back.

Questions are stored redacted (as behaviour events store them); replies are stored as the JSON the
page rendered, already through the output guard. A user sees only their own conversations: every
lookup is by (user, id), and another user's id is simply not found.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, delete, select
from sqlmodel import Session, col

from core.db import session_scope
from core.models import WebConversationRow, WebTurnRow, as_utc, utcnow
from privacy.redaction import Redactor

TITLE_CHARS = 80
LIST_LIMIT = 100


class History:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._redactor = Redactor()

    def conversations(self, user: str, *, limit: int = LIST_LIMIT) -> list[dict[str, Any]]:
        """The user's conversations, most recently used first."""
        query = (
            select(WebConversationRow)
            .where(col(WebConversationRow.user_id) == user)
            .order_by(col(WebConversationRow.updated_at).desc(), col(WebConversationRow.id).desc())
            .limit(limit)
        )
        with Session(self.engine) as session:
            return [_summary(row) for row in session.execute(query).scalars()]

    def conversation(self, user: str, conversation_id: int) -> dict[str, Any] | None:
        """One conversation with its turns in order, or None when the user has no such conversation."""
        with Session(self.engine) as session:
            row = self._owned(session, user, conversation_id)
            if row is None:
                return None
            turns = session.execute(
                select(WebTurnRow)
                .where(col(WebTurnRow.conversation_id) == conversation_id)
                .order_by(col(WebTurnRow.id))
            ).scalars()
            return _summary(row) | {
                "turns": [
                    {"question": t.question, "reply": t.reply, "at": as_utc(t.at).isoformat()} for t in turns
                ]
            }

    def start(self, user: str, question: str) -> dict[str, Any]:
        """A new conversation titled by its first question."""
        now = utcnow()
        title = self._redactor.redact(" ".join(question.split())).text
        if len(title) > TITLE_CHARS:
            title = title[: TITLE_CHARS - 1].rstrip() + "…"
        with session_scope(self.engine) as session:
            row = WebConversationRow(user_id=user, title=title, created_at=now, updated_at=now)
            session.add(row)
            session.flush()
            return _summary(row)

    def exists(self, user: str, conversation_id: int) -> bool:
        with Session(self.engine) as session:
            return self._owned(session, user, conversation_id) is not None

    def add_turn(self, user: str, conversation_id: int, question: str, reply: dict[str, Any]) -> bool:
        """Append a turn; False when the conversation is gone (deleted meanwhile) or not the user's."""
        now = utcnow()
        with session_scope(self.engine) as session:
            row = self._owned(session, user, conversation_id)
            if row is None:
                return False
            row.updated_at = now
            session.add(
                WebTurnRow(
                    conversation_id=conversation_id,
                    question=self._redactor.redact(question).text,
                    reply=reply,
                    at=now,
                )
            )
        return True

    def delete(self, user: str, conversation_id: int) -> bool:
        with session_scope(self.engine) as session:
            if self._owned(session, user, conversation_id) is None:
                return False
            session.execute(delete(WebTurnRow).where(col(WebTurnRow.conversation_id) == conversation_id))
            session.execute(delete(WebConversationRow).where(col(WebConversationRow.id) == conversation_id))
        return True

    @staticmethod
    def _owned(session: Session, user: str, conversation_id: int) -> WebConversationRow | None:
        row = session.get(WebConversationRow, conversation_id)
        return row if row is not None and row.user_id == user else None


def _summary(row: WebConversationRow) -> dict[str, Any]:
    return {"id": row.id, "title": row.title, "updated_at": as_utc(row.updated_at).isoformat()}
