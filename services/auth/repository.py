"""Every SQL statement of the auth service. Methods flush; the session dependency commits."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CursorResult, case, delete, literal, select, update
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import Executable

from services.auth.errors import EmailTaken
from services.auth.models import FirstAccount, Invite, LoginAttempts, MailToken, RefreshToken, User


class AuthRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get_user(self, user_id: str) -> User | None:
        return await self._session.get(User, user_id)

    async def get_user_by_email(self, email: str) -> User | None:
        result = await self._session.execute(select(User).where(User.email == email))
        user = result.scalar_one_or_none()
        # MariaDB compares under the column's collation, which takes "é" for "e": only the very
        # address may match, or the login throttle (which counts per address as typed) could be
        # walked around one accent at a time.
        return user if user is not None and user.email == email else None

    async def end_reads(self) -> None:
        """End the transaction of what was read so far, handing its connection back to the pool:
        a request must not hold one through the password check and then ask for another."""
        await self._session.commit()

    async def add_user(self, user: User) -> None:
        self._session.add(user)
        try:
            await self._session.flush()
        except IntegrityError as exc:
            # The unique index decides when two registrations of one email race.
            raise EmailTaken() from exc

    async def save(self) -> None:
        await self._session.flush()

    async def add_refresh_token(self, token: RefreshToken) -> None:
        self._session.add(token)
        await self._session.flush()

    async def get_refresh_token_by_hash(self, token_hash: str) -> RefreshToken | None:
        result = await self._session.execute(
            select(RefreshToken).where(RefreshToken.token_hash == token_hash)
        )
        return result.scalar_one_or_none()

    async def claim_refresh_token(self, token_id: str, now: datetime) -> bool:
        """Mark a token used, atomically: of two requests presenting it, exactly one wins."""
        result: CursorResult[tuple[()]] = await self._session.execute(  # type: ignore[assignment]
            update(RefreshToken)
            .where(
                RefreshToken.id == token_id,
                RefreshToken.used_at.is_(None),
                RefreshToken.revoked_at.is_(None),
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1

    async def claim_first_account(self, user_id: str) -> bool:
        """Whether this sign-up is the installation's first: the slot's insert wins once."""
        dialect = self._session.get_bind().dialect.name
        row = {"slot": 1, "user_id": user_id}
        statement: Executable
        if dialect in ("mysql", "mariadb"):
            statement = mysql.insert(FirstAccount).values(row).prefix_with("IGNORE")
        elif dialect == "sqlite":
            statement = sqlite.insert(FirstAccount).values(row).on_conflict_do_nothing()
        else:
            raise NotImplementedError(f"sign-ups do not support {dialect}")
        result: CursorResult[tuple[()]] = await self._session.execute(statement)  # type: ignore[assignment]
        return result.rowcount == 1

    async def list_users(self, limit: int) -> list[User]:
        result = await self._session.execute(
            select(User).order_by(User.created_at, User.id).limit(limit)
        )
        return list(result.scalars())

    async def add(self, row: Invite | MailToken) -> None:
        self._session.add(row)
        await self._session.flush()

    async def get_invite_by_hash(self, token_hash: str) -> Invite | None:
        result = await self._session.execute(select(Invite).where(Invite.token_hash == token_hash))
        return result.scalar_one_or_none()

    async def claim_invite(self, invite_id: str, user_id: str, now: datetime) -> bool:
        """Use an invite, atomically: of two sign-ups presenting it, exactly one wins."""
        result: CursorResult[tuple[()]] = await self._session.execute(  # type: ignore[assignment]
            update(Invite)
            .where(Invite.id == invite_id, Invite.used_at.is_(None), Invite.expires_at > now)
            .values(used_at=now, used_by=user_id)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1

    async def get_mail_token_by_hash(self, token_hash: str) -> MailToken | None:
        result = await self._session.execute(
            select(MailToken).where(MailToken.token_hash == token_hash)
        )
        return result.scalar_one_or_none()

    async def claim_mail_token(self, token_id: str, now: datetime) -> bool:
        result: CursorResult[tuple[()]] = await self._session.execute(  # type: ignore[assignment]
            update(MailToken)
            .where(MailToken.id == token_id, MailToken.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1

    async def revoke_refresh_tokens_of(self, user_id: str, now: datetime) -> None:
        await self._session.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )

    async def revoke_refresh_family(self, family_id: str, now: datetime) -> None:
        await self._session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )


class LoginAttemptsRepository:
    """The shared login-attempt counters. Each call is meant for its own short transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def count_attempt(
        self, scope: str, subject: str, now: datetime, new_window_ends_at: datetime
    ) -> tuple[int, datetime]:
        """Count one attempt atomically; the attempts so far in the window and when it ends.

        One upsert, so that concurrent attempts (from any auth instance) each get their own
        count: a burst of parallel guesses cannot all slip in under the limit.
        """
        await self._session.execute(self._upsert(scope, subject, now, new_window_ends_at))
        row = (
            await self._session.execute(
                select(LoginAttempts.attempts, LoginAttempts.window_ends_at)
                .where(LoginAttempts.scope == scope, LoginAttempts.subject == subject)
                .with_for_update()
            )
        ).one()
        return row.attempts, row.window_ends_at

    def _upsert(
        self, scope: str, subject: str, now: datetime, new_window_ends_at: datetime
    ) -> Executable:
        in_window = LoginAttempts.window_ends_at > now
        attempts = case((in_window, LoginAttempts.attempts + 1), else_=1)
        # Typed like the column, so that the aware datetime is stored as naive UTC like the rest.
        new_end = literal(new_window_ends_at, LoginAttempts.window_ends_at.type)
        window_ends_at = case((in_window, LoginAttempts.window_ends_at), else_=new_end)
        values = {
            "scope": scope,
            "subject": subject,
            "attempts": 1,
            "window_ends_at": new_window_ends_at,
        }
        dialect = self._session.get_bind().dialect.name
        if dialect in ("mysql", "mariadb"):
            # MySQL applies these assignments left to right, each seeing the ones before it:
            # `attempts` must go first, while `window_ends_at` still holds the old value.
            return (
                mysql.insert(LoginAttempts)
                .values(values)
                .on_duplicate_key_update(
                    [("attempts", attempts), ("window_ends_at", window_ends_at)]
                )
            )
        if dialect == "sqlite":
            return (
                sqlite.insert(LoginAttempts)
                .values(values)
                .on_conflict_do_update(
                    index_elements=[LoginAttempts.scope, LoginAttempts.subject],
                    set_={"attempts": attempts, "window_ends_at": window_ends_at},
                )
            )
        raise NotImplementedError(f"login throttling does not support {dialect}")

    async def uncount_attempt(self, scope: str, subject: str, now: datetime) -> None:
        await self._session.execute(
            update(LoginAttempts)
            .where(
                LoginAttempts.scope == scope,
                LoginAttempts.subject == subject,
                LoginAttempts.window_ends_at > now,
                LoginAttempts.attempts > 0,
            )
            .values(attempts=LoginAttempts.attempts - 1)
            .execution_options(synchronize_session=False)
        )

    async def forget(self, scope: str, subject: str) -> None:
        await self._session.execute(
            delete(LoginAttempts)
            .where(LoginAttempts.scope == scope, LoginAttempts.subject == subject)
            .execution_options(synchronize_session=False)
        )

    async def purge_expired(self, now: datetime) -> None:
        await self._session.execute(
            delete(LoginAttempts)
            .where(LoginAttempts.window_ends_at <= now)
            .execution_options(synchronize_session=False)
        )
