"""What the auth service does: register, log in, rotate refresh tokens, prove addresses, and
the operator's controls over accounts. No HTTP in here."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import unicodedata
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import NoReturn

from email_validator import EmailNotValidError, validate_email

from services.auth import passwords
from services.auth.devices import DeviceTokens
from services.auth.errors import (
    AccountDisabled,
    AdminRequired,
    AlreadyVerified,
    EmailTaken,
    InvalidCredentials,
    InvalidMailToken,
    InvalidRefreshToken,
    InviteRequired,
    RefreshTokenReused,
    RegistrationClosed,
)
from services.auth.keys import SigningKey
from services.auth.mail import RESET_TTL_SECONDS, VERIFY_TTL_SECONDS, Postman
from services.auth.models import Invite, MailToken, RefreshToken, User
from services.auth.repository import AuthRepository
from services.auth.throttle import LoginThrottle, account_subject
from shared.accounts import Account, AccountLimits
from shared.errors import ErrorCode, NotFound, Unauthorized, Unprocessable
from shared.settings import Settings


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    device_token: str | None = None
    """From a login only: what this client presents at its next login (see `devices`)."""


def normalise_email(email: str) -> str:
    """One form of an address however it was typed, for register, login and the throttle alike:
    email-validator's normalised form (Unicode NFC, an IDNA domain in Unicode), lower-cased."""
    email = unicodedata.normalize("NFC", email.strip())
    # An invalid address has no account; the throttle still counts it as typed.
    with contextlib.suppress(EmailNotValidError):
        email = validate_email(email, check_deliverability=False).normalized
    return email.lower()


class Purpose(StrEnum):
    VERIFY = "verify"
    RESET = "reset"


@dataclass(frozen=True)
class AccountChanges:
    """What an admin changes of an account; None leaves a field as it is."""

    disabled: bool | None = None
    admin: bool | None = None
    limits: AccountLimits | None = None
    limit_fields: frozenset[str] = frozenset()
    """Which limits the request named (a named null resets that limit to the default)."""


def to_account(user: User) -> Account:
    return Account(
        id=user.id,
        email=user.email,
        email_verified=user.email_verified,
        admin=user.is_admin,
        disabled=user.disabled_at is not None,
        created_at=user.created_at,
        limits=AccountLimits.model_validate(user),
    )


def hash_refresh_token(token: str) -> str:
    # A plain SHA-256 suffices: the token is 256 random bits, so there is nothing to brute-force,
    # and a stolen table yields no usable token.
    return hashlib.sha256(token.encode()).hexdigest()


def _new_id() -> str:
    return uuid.uuid4().hex


class AuthService:
    def __init__(
        self,
        repository: AuthRepository,
        signing_key: SigningKey,
        settings: Settings,
        throttle: LoginThrottle,
        hashing: passwords.HashingLanes,
        postman: Postman,
    ):
        self._repository = repository
        self._signing_key = signing_key
        self._settings = settings
        self._throttle = throttle
        self._hashing = hashing
        self._postman = postman
        self._devices = DeviceTokens(signing_key, settings.jwt_issuer, settings.jwt_audience)

    async def register(
        self, email: str, password: str, client_address: str | None, invite: str | None = None
    ) -> User:
        # The whole sign-up waits in the new-password lane: a burst beyond its short line is
        # refused before it costs even a database write.
        async with self._hashing.new_password.slot():
            await self._throttle.count_signup(client_address)
            email = normalise_email(email)
            named_admin = email in self._admin_emails()
            invitation = await self._admission(invite, named_admin)
            passwords.check_password_strength(password)
            if await self._repository.get_user_by_email(email) is not None:
                raise EmailTaken()
            # No transaction held open through the hash: on SQLite it would block every other
            # request's commit (a login's among them) until the hash is done.
            await self._repository.end_reads()
            password_hash = await self._hashing.hash_new(password)
            user_id = _new_id()
            # Rolled back with the sign-up when it fails, so the slot stays free for the next.
            first = await self._repository.claim_first_account(user_id)
            user = User(
                id=user_id,
                email=email,
                password_hash=password_hash,
                created_at=datetime.now(UTC),
                email_verified=not self._settings.verify_emails,
                is_admin=first or named_admin,
            )
            await self._repository.add_user(user)
            if invitation is not None and not await self._repository.claim_invite(
                invitation.id, user.id, datetime.now(UTC)
            ):
                raise InviteRequired()  # another sign-up used it meanwhile
            if not user.email_verified:
                token = await self._mail_token(user, Purpose.VERIFY, VERIFY_TTL_SECONDS)
                self._postman.send_verification(user.email, token)
            return user

    def _admin_emails(self) -> set[str]:
        return {normalise_email(e) for e in self._settings.admin_email_list}

    async def _admission(self, invite: str | None, named_admin: bool) -> Invite | None:
        """What lets this sign-up in under REGISTRATION: the invite it must use, if any."""
        mode = self._settings.registration
        if named_admin or mode == "open":
            return None
        if mode == "closed":
            raise RegistrationClosed()
        if not invite:
            raise InviteRequired()
        found = await self._repository.get_invite_by_hash(hash_refresh_token(invite))
        if found is None or found.used_at is not None or found.expires_at <= datetime.now(UTC):
            raise InviteRequired()
        return found

    async def _mail_token(self, user: User, purpose: Purpose, ttl: int) -> str:
        token = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        await self._repository.add(
            MailToken(
                id=_new_id(),
                token_hash=hash_refresh_token(token),
                purpose=purpose,
                user_id=user.id,
                email=user.email,
                created_at=now,
                expires_at=now + timedelta(seconds=ttl),
            )
        )
        return token

    async def _use_mail_token(self, token: str, purpose: Purpose) -> User:
        now = datetime.now(UTC)
        found = await self._repository.get_mail_token_by_hash(hash_refresh_token(token))
        if (
            found is None
            or found.purpose != purpose
            or found.used_at is not None
            or found.expires_at <= now
            or not await self._repository.claim_mail_token(found.id, now)
        ):
            raise InvalidMailToken()
        user = await self._repository.get_user(found.user_id)
        if user is None or user.email != found.email:
            raise InvalidMailToken()
        return user

    async def verify_email(self, token: str) -> User:
        user = await self._use_mail_token(token, Purpose.VERIFY)
        user.email_verified = True
        await self._repository.save()
        return user

    async def resend_verification(self, user_id: str) -> None:
        """Mail the account's address a new verification link; earlier links stay good."""
        user = await self.get_user(user_id)
        if user.disabled_at is not None:
            raise AccountDisabled()
        if user.email_verified:
            raise AlreadyVerified()
        await self._throttle.count_verify_mail(user.email)
        token = await self._mail_token(user, Purpose.VERIFY, VERIFY_TTL_SECONDS)
        self._postman.send_verification(user.email, token)

    async def request_password_reset(self, email: str) -> None:
        """Mail a reset link if the address has an account; the caller answers the same either
        way, and this takes about as long either way (the mail goes out in the background)."""
        email = normalise_email(email)
        user = await self._repository.get_user_by_email(email)
        if user is None or user.disabled_at is not None:
            return
        if not await self._throttle.reset_mail_allowed(email):
            return
        token = await self._mail_token(user, Purpose.RESET, RESET_TTL_SECONDS)
        self._postman.send_reset(user.email, token)

    async def confirm_password_reset(self, token: str, password: str) -> User:
        passwords.check_password_strength(password)
        async with self._hashing.new_password.slot():
            user = await self._use_mail_token(token, Purpose.RESET)
            if user.disabled_at is not None:
                raise AccountDisabled()
            user.password_hash = await self._hashing.hash_new(password)
            # The mail reached its owner: that proves the address too.
            user.email_verified = True
            # Whoever held the account until now loses every session (device tokens die with
            # the old password by themselves).
            await self._repository.revoke_refresh_tokens_of(user.id, datetime.now(UTC))
            await self._repository.save()
            return user

    async def account(self, user_id: str) -> Account:
        user = await self._repository.get_user(user_id)
        if user is None:
            raise NotFound("no such account")
        return to_account(user)

    async def require_admin(self, user_id: str) -> User:
        user = await self._repository.get_user(user_id)
        if user is None or not user.is_admin or user.disabled_at is not None:
            raise AdminRequired()
        return user

    async def list_accounts(self, limit: int) -> list[Account]:
        return [to_account(user) for user in await self._repository.list_users(limit)]

    async def change_account(self, admin: User, user_id: str, changes: AccountChanges) -> Account:
        user = await self._repository.get_user(user_id)
        if user is None:
            raise NotFound("no such account")
        if user.id == admin.id and (changes.disabled or changes.admin is False):
            raise Unprocessable("an admin cannot disable or demote their own account")
        now = datetime.now(UTC)
        if changes.disabled is True and user.disabled_at is None:
            user.disabled_at = now
            await self._repository.revoke_refresh_tokens_of(user.id, now)
        elif changes.disabled is False:
            user.disabled_at = None
        if changes.admin is not None:
            user.is_admin = changes.admin
        if changes.limits is not None:
            for name in changes.limit_fields:
                setattr(user, name, getattr(changes.limits, name))
        await self._repository.save()
        return to_account(user)

    async def create_invite(self, admin: User, ttl: timedelta) -> tuple[str, datetime]:
        token = secrets.token_urlsafe(24)
        now = datetime.now(UTC)
        expires_at = now + ttl
        await self._repository.add(
            Invite(
                id=_new_id(),
                token_hash=hash_refresh_token(token),
                created_by=admin.id,
                created_at=now,
                expires_at=expires_at,
            )
        )
        return token, expires_at

    async def login(
        self,
        email: str,
        password: str,
        client_address: str | None,
        device_token: str | None = None,
    ) -> TokenPair:
        async with self._hashing.login():
            return await self._login(email, password, client_address, device_token)

    async def _login(
        self, email: str, password: str, client_address: str | None, device_token: str | None
    ) -> TokenPair:
        email = normalise_email(email)
        account = account_subject(email)
        user = await self._repository.get_user_by_email(email)
        await self._repository.end_reads()
        device = self._devices.device_of(device_token, account, user)
        attempt = await self._throttle.count(email, client_address, device)
        if len(password) > passwords.MAX_PASSWORD_LENGTH:
            raise InvalidCredentials()  # no such password was ever accepted; skip the hashing
        if user is None:
            await passwords.burn_verify_time(password)
            raise InvalidCredentials()
        valid, new_hash = await passwords.verify_password(password, user.password_hash)
        if not valid:
            raise InvalidCredentials()
        if user.disabled_at is not None:
            # Only after the password: a stranger learns nothing of the account's state.
            raise AccountDisabled()
        await self._throttle.succeeded(attempt)
        if new_hash is not None:
            user.password_hash = new_hash  # hashing parameters were raised since this one was made
            await self._repository.save()
        pair = await self._issue_tokens(user, family_id=_new_id())
        return replace(pair, device_token=self._devices.issue(account, user, device))

    async def refresh(self, refresh_token: str) -> TokenPair:
        now = datetime.now(UTC)
        stored = await self._repository.get_refresh_token_by_hash(hash_refresh_token(refresh_token))
        if stored is None:
            raise InvalidRefreshToken()
        owner = await self._repository.get_user(stored.user_id)
        if owner is not None and owner.disabled_at is not None:
            # Disabling revoked the token too; the owner is told why rather than "invalid".
            raise AccountDisabled()
        if stored.revoked_at is not None:
            raise InvalidRefreshToken()
        if stored.used_at is not None:
            await self._revoke_family(stored.family_id, now)
        if stored.expires_at <= now:
            raise InvalidRefreshToken()
        if not await self._repository.claim_refresh_token(stored.id, now):
            # Another request rotated it between our read and our update: that is reuse too.
            await self._revoke_family(stored.family_id, now)
        if owner is None:
            raise InvalidRefreshToken()
        return await self._issue_tokens(owner, family_id=stored.family_id)

    async def get_user(self, user_id: str) -> User:
        user = await self._repository.get_user(user_id)
        if user is None:
            # A valid token for a user deleted since it was issued.
            raise Unauthorized("this account no longer exists", code=ErrorCode.INVALID_TOKEN)
        return user

    async def _revoke_family(self, family_id: str, now: datetime) -> NoReturn:
        """A rotated token came back, so one of its holders is not its owner: end the family."""
        await self._repository.revoke_refresh_family(family_id, now)
        raise RefreshTokenReused()

    async def _issue_tokens(self, user: User, *, family_id: str) -> TokenPair:
        now = datetime.now(UTC)
        access_ttl = self._settings.access_token_ttl
        issued_at = int(now.timestamp())
        access_token = self._signing_key.sign(
            {
                "sub": user.id,
                "email": user.email,
                "email_verified": user.email_verified,
                "iss": self._settings.jwt_issuer,
                "aud": self._settings.jwt_audience,
                "iat": issued_at,
                "exp": issued_at + access_ttl,
                "jti": _new_id(),
            }
        )
        refresh_token = secrets.token_urlsafe(32)
        await self._repository.add_refresh_token(
            RefreshToken(
                id=_new_id(),
                token_hash=hash_refresh_token(refresh_token),
                family_id=family_id,
                user_id=user.id,
                created_at=now,
                expires_at=now + timedelta(seconds=self._settings.refresh_token_ttl),
            )
        )
        return TokenPair(access_token, access_ttl, refresh_token)
