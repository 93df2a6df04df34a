"""Login brute-force protection: attempts counted per account (or known device) and per address.

Every login attempt is counted *before* its password is checked, each in its own short
transaction, so that parallel guesses each see their own count and no lock is held while Argon2
runs. Over the limit the attempt is refused with 429 without looking at the password, the same
way for accounts that exist and accounts that do not.

A successful login forgets the account's count and takes back its own count from the address, so
that many people behind one NAT logging in correctly never lock each other out; failures from an
address add up whichever accounts they try (password spraying).

Windows are fixed: the first counted attempt opens one of `window_seconds`; when it is over the
count starts again. Locking accounts would let anyone lock a victim out by failing on purpose;
so a login that presents a device token of the account (see `devices`) is counted against that
device instead, with the same limit: strangers' failures lock only devices that never logged in.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.auth.errors import TooManyAttempts, TooManyMails, TooManySignUps
from services.auth.repository import LoginAttemptsRepository
from shared.settings import Settings

log = logging.getLogger(__name__)

# Mails of one kind (reset, verification asked again) to one address per window: enough for a lost
# mail, too few to flood anyone.
MAILS_PER_WINDOW = 3
# A counting transaction that lost a lock race (InnoDB deadlock, SQLite busy) is simply run again.
COUNT_TRIES = 3
# Expired rows are deleted now and then rather than on every attempt (fewer writes, fewer locks).
PURGE_EVERY = 256


class Scope(StrEnum):
    ACCOUNT = "account"
    DEVICE = "device"
    ADDRESS = "address"
    SIGNUP = "signup"
    RESET_MAIL = "reset_mail"
    VERIFY_MAIL = "verify_mail"


@dataclass(frozen=True)
class ThrottlePolicy:
    max_failures_per_account: int
    max_failures_per_address: int
    window_seconds: int
    max_signups_per_address: int = 10

    @classmethod
    def from_settings(cls, settings: Settings) -> ThrottlePolicy:
        """LOGIN_MAX_FAILURES, LOGIN_MAX_FAILURES_PER_ADDRESS and LOGIN_WINDOW_SECONDS."""
        return cls(
            max_failures_per_account=settings.login_max_failures,
            max_failures_per_address=settings.login_max_failures_per_address,
            window_seconds=settings.login_window_seconds,
            max_signups_per_address=settings.signup_max_per_address,
        )

    def limit(self, scope: Scope) -> int:
        if scope is Scope.ADDRESS:
            return self.max_failures_per_address
        if scope is Scope.SIGNUP:
            return self.max_signups_per_address
        if scope in (Scope.RESET_MAIL, Scope.VERIFY_MAIL):
            return MAILS_PER_WINDOW
        return self.max_failures_per_account


def account_subject(normalised_email: str) -> str:
    return hashlib.sha256(normalised_email.encode()).hexdigest()


def address_subject(address: str) -> str | None:
    """The counter an address adds to; an IPv6 client's whole /64, which one host usually has."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True)
class CountedAttempt:
    """The counters one login attempt was added to, to settle once its outcome is known."""

    scope: Scope
    """ACCOUNT, or DEVICE for a login from a device the account logged in from before."""
    subject: str
    address: str | None


class LoginThrottle:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        policy: ThrottlePolicy,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessions = sessions
        self._policy = policy
        self._clock = clock
        self._counted = 0

    async def count(
        self, normalised_email: str, address: str | None, device: str | None = None
    ) -> CountedAttempt:
        """Count this attempt; raise TooManyAttempts when the account (or `device`, a known
        device of the account) or the address is over."""
        attempt = CountedAttempt(
            Scope.DEVICE if device else Scope.ACCOUNT,
            device or account_subject(normalised_email),
            address_subject(address) if address else None,
        )
        # The address first: a client over its limit does not add to the account's count.
        if attempt.address is not None:
            await self._count_one(Scope.ADDRESS, attempt.address)
        await self._count_one(attempt.scope, attempt.subject)
        await self._maybe_purge()
        return attempt

    async def count_signup(self, address: str | None) -> None:
        """Count a sign-up from `address` (every one, whatever its outcome: each may cost a
        hash); raise TooManyAttempts when the address is over. None (a trusted proxy that named
        no client) is not counted, as for logins."""
        subject = address_subject(address) if address else None
        if subject is None:
            return
        try:
            await self._count_one(Scope.SIGNUP, subject)
        except TooManyAttempts as exc:
            raise TooManySignUps(exc.retry_after or 1) from None
        await self._maybe_purge()

    async def reset_mail_allowed(self, normalised_email: str) -> bool:
        """Count a reset mail to this address; False when too many went there this window (the
        request still answers 202 like any other)."""
        try:
            await self._count_one(Scope.RESET_MAIL, account_subject(normalised_email))
        except TooManyAttempts:
            return False
        return True

    async def count_verify_mail(self, normalised_email: str) -> None:
        """Count a verification mail asked for again; TooManyMails past the window's few."""
        try:
            await self._count_one(Scope.VERIFY_MAIL, account_subject(normalised_email))
        except TooManyAttempts as exc:
            raise TooManyMails(exc.retry_after or 1) from None

    async def succeeded(self, attempt: CountedAttempt) -> None:
        now = self._clock()
        async with self._sessions.begin() as session:
            repository = LoginAttemptsRepository(session)
            # Only its own counter: a known device's success must not hand strangers who failed
            # on the account a fresh set of guesses.
            await repository.forget(attempt.scope, attempt.subject)
            if attempt.address is not None:
                await repository.uncount_attempt(Scope.ADDRESS, attempt.address, now)

    async def _count_one(self, scope: Scope, subject: str) -> None:
        now = self._clock()
        attempts, window_ends_at = await self._count_in_transaction(scope, subject, now)
        if attempts > self._policy.limit(scope):
            retry_after = max(1, math.ceil((window_ends_at - now).total_seconds()))
            raise TooManyAttempts(retry_after)

    async def _count_in_transaction(
        self, scope: Scope, subject: str, now: datetime
    ) -> tuple[int, datetime]:
        new_window_ends_at = now + timedelta(seconds=self._policy.window_seconds)
        for tries_left in reversed(range(COUNT_TRIES)):
            try:
                async with self._sessions.begin() as session:
                    return await LoginAttemptsRepository(session).count_attempt(
                        scope, subject, now, new_window_ends_at
                    )
            except OperationalError:
                if not tries_left:
                    raise
                log.info("counting a login attempt lost a lock race; counting again")
        raise AssertionError("unreachable")

    async def _maybe_purge(self) -> None:
        self._counted += 1
        if self._counted % PURGE_EVERY:
            return
        try:
            async with self._sessions.begin() as session:
                await LoginAttemptsRepository(session).purge_expired(self._clock())
        except DBAPIError as exc:  # housekeeping only; the next round will try again
            log.warning("could not purge expired login attempts: %s", type(exc).__name__)
