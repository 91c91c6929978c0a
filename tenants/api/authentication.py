"""API authentication: tenant API keys for machines, JWT for users (sessions come from DRF)."""

from __future__ import annotations

from rest_framework import authentication, exceptions
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import ExpiredTokenError, InvalidToken
from rest_framework_simplejwt.settings import api_settings as jwt_settings

from metrics.security import observe_api_key_use, observe_jwt_expired, observe_jwt_validated

from .. import audit
from ..choices import API_KEY_HEADER_KEYWORD, AuditAction, AuthMethod, AuthResult
from ..models import ApiKey, InvalidApiKey


class ApiKeyUser:
    """The principal of a request authenticated by an API key (not a database user)."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, key: ApiKey):
        self.api_key = key
        self.username = f"api-key:{key.prefix}"

    def get_username(self) -> str:
        return self.username

    def __str__(self) -> str:
        return self.username


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Api-Key trv_<prefix>_<secret>`; request.auth is the ApiKey."""

    keyword = API_KEY_HEADER_KEYWORD

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        keyword, _, raw_key = header.partition(" ")
        if keyword.lower() != self.keyword.lower():
            return None
        raw_key = raw_key.strip()
        try:
            key = ApiKey.authenticate(raw_key)
        except InvalidApiKey as exc:
            audit.record(
                AuditAction.LOGIN,
                request=request,
                actor=raw_key.split("_", 2)[1][:16] if raw_key.count("_") >= 2 else "",
                method=AuthMethod.API_KEY,
                result=AuthResult.FAILURE,
                reason=str(exc),
            )
            raise exceptions.AuthenticationFailed(str(exc)) from exc
        observe_api_key_use(key)
        return ApiKeyUser(key), key

    def authenticate_header(self, request) -> str:
        return self.keyword


class AuditedJWTAuthentication(JWTAuthentication):
    """simplejwt's bearer authentication; the hook where token validations are observed."""

    def get_validated_token(self, raw_token):
        try:
            token = super().get_validated_token(raw_token)
        except InvalidToken:
            if token_is_expired(raw_token):
                observe_jwt_expired()
            raise
        observe_jwt_validated()
        return token


def token_is_expired(raw_token) -> bool:
    """Whether a rejected token was refused for its expiry (simplejwt folds the reasons)."""
    for token_class in jwt_settings.AUTH_TOKEN_CLASSES:
        try:
            token_class(raw_token)
        except ExpiredTokenError:
            return True
        except Exception:  # any other reason to refuse it
            continue
    return False
