"""The auth service's errors: named subclasses of the shared hierarchy, codes from the contract."""

from __future__ import annotations

from shared.errors import AppError, Conflict, ErrorCode, Forbidden, Unauthorized, Unprocessable


class EmailTaken(Conflict):
    code = ErrorCode.EMAIL_TAKEN

    def __init__(self) -> None:
        super().__init__("this email is already registered")


class WeakPassword(Unprocessable):
    code = ErrorCode.WEAK_PASSWORD


class InvalidCredentials(Unauthorized):
    code = ErrorCode.INVALID_CREDENTIALS

    def __init__(self) -> None:
        super().__init__("wrong email or password")


class InvalidRefreshToken(Unauthorized):
    code = ErrorCode.INVALID_TOKEN

    def __init__(self) -> None:
        super().__init__("invalid or expired refresh token")


class RefreshTokenReused(InvalidRefreshToken):
    """A rotated refresh token came back: its family is revoked, and that must be committed.

    The session dependency commits on this error (and only this one) even though the request
    fails: rolling back would let the stolen token family live on.
    """


class TooManyAttempts(AppError):
    """Too many failed logins for this account or from this address within the window.

    One answer whether the account exists or not; `retry_after` (seconds) goes out in the body
    and as the `Retry-After` header.
    """

    status_code = 429
    code = ErrorCode.TOO_MANY_ATTEMPTS

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed login attempts; try again in {retry_after} seconds")
        self.retry_after = retry_after


class TooManySignUps(TooManyAttempts):
    """Too many sign-ups from this address, or too many passwords waiting to be hashed."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.detail = f"too many sign-ups; try again in {retry_after} seconds"


class RegistrationClosed(Forbidden):
    code = ErrorCode.REGISTRATION_CLOSED

    def __init__(self) -> None:
        super().__init__("registration is closed; ask the operator for an account")


class InviteRequired(Forbidden):
    code = ErrorCode.INVITE_REQUIRED

    def __init__(self) -> None:
        super().__init__("registration needs a valid, unused invite")


class AccountDisabled(Forbidden):
    code = ErrorCode.ACCOUNT_DISABLED

    def __init__(self) -> None:
        super().__init__("this account is disabled")


class AdminRequired(Forbidden):
    def __init__(self) -> None:
        super().__init__("only an admin may do this")


class AlreadyVerified(Conflict):
    code = ErrorCode.ALREADY_VERIFIED

    def __init__(self) -> None:
        super().__init__("this address is confirmed already")


class TooManyMails(TooManyAttempts):
    """Too many mails of one kind to one address within the window."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.detail = f"a link went to this address just now; ask again in {retry_after} seconds"


class InvalidMailToken(AppError):
    """A verification or reset token that is unknown, used, expired or for another purpose."""

    code = ErrorCode.INVALID_TOKEN

    def __init__(self) -> None:
        super().__init__("this link is invalid, used or expired; ask for a new one")
