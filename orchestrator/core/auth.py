"""Who may do what: bearer tokens, the roles they carry, and what each role may call.

A node given a tokens file (`tokens_file`) refuses every call without a known token
(UNAUTHENTICATED / HTTP 401) and every call its token's roles do not cover (PERMISSION_DENIED /
HTTP 403), before anything is read or written. Without one it runs open, as a development
cluster on loopback does.

Roles:
- reader: read definitions, workflows, events, the cluster's state;
- operator: a reader who also starts, operates and signals workflows and publishes events;
- worker: connects for tasks (only the task types its token names, if it names any), reads
  and acknowledges events of its subscriptions, reports task results;
- admin: everything, including definitions, event handlers, topics and stepping the leader down.

The tokens file (YAML or JSON) lists `tokens:`, each with a `name`, `roles` and either `token`
(the secret itself) or `sha256` (its hex digest, so the file need not hold secrets), and for
workers optionally `task_types`, and optionally a `namespace` that confines the token to that
namespace (see core/namespaces.py; a token without one may act in any namespace it names).
Presented tokens are looked up by their SHA-256 digest.

It may also (or instead) accept JSON Web Tokens signed by an identity provider: `jwt:` with the
`algorithm` (HS256/384/512 with a shared `secret_file`, RS*/ES* with a `public_key_file`),
optionally `issuer` and `audience`. A JWT must carry `sub` (the principal's name), `exp`, and
its roles in `roles` (or the claim named by `roles_claim`), optionally `task_types` and its
namespace in `ns`; one that
names a role we do not know is refused rather than half-trusted. Verified with PyJWT.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

from . import namespaces

__all__ = ["ROLES", "JwtRules", "Principal", "Tokens", "TokensError", "allows", "jwt_key_file", "namespace_for",
           "principal_in"]

ROLES = ("reader", "operator", "worker", "admin")
_IMPLIES = {"admin": {"admin", "operator", "worker", "reader"}, "operator": {"operator", "reader"},
            "worker": {"worker"}, "reader": {"reader"}}
MAX_TOKENS = 10_000


class TokensError(ValueError):
    """The tokens file cannot be used; the node does not start."""


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]
    task_types: frozenset[str] | None = None   # a worker's task types; None = any
    namespace: str | None = None               # the one namespace it may act in; None = any

    def may(self, role: str) -> bool:
        return any(role in _IMPLIES[held] for held in self.roles)

    def may_serve(self, task_types: list[str] | frozenset[str]) -> bool:
        """Whether this principal may take tasks of all these types."""
        return not self.serve_refusal(task_types)

    def serve_refusal(self, task_types: list[str] | frozenset[str]) -> str:
        """Why this principal may not take tasks of these types; "" when it may. Conductor's
        system types are queued for every namespace at once, so a confined token serves none."""
        if not self.may("worker"):
            return f"{self.name} has no worker role"
        system = sorted(namespaces.SYSTEM_TYPES.intersection(task_types))
        if system and self.namespace is not None:
            return (f"{', '.join(system)}: Conductor's system task types are queued for every namespace at once; "
                    "only a token without a namespace may serve them")
        if self.task_types is None or "admin" in self.roles or set(task_types) <= self.task_types:
            return ""
        return (f"{self.name} may not serve task types {', '.join(sorted(task_types))}; its token names "
                f"{', '.join(sorted(self.task_types))}")


def allows(principal: Principal | None, role: str) -> bool:
    return principal is not None and principal.may(role)


def namespace_for(principal: Principal | None, asked: str) -> str:
    """The namespace a request acts in: the one it asks for (header `namespace` on gRPC,
    `X-Namespace` on HTTP), which a confined token may only leave out or repeat.
    ValueError: not a namespace name; PermissionError: outside the token's namespace."""
    namespaces.checked(asked)
    if principal is None or principal.namespace is None:
        return asked
    if asked and asked != principal.namespace:
        raise PermissionError(f"{principal.name} may act only in namespace '{principal.namespace or '(default)'}', "
                              f"not in '{asked}'")
    return principal.namespace


def principal_in(scope: Mapping[str, Any]) -> Principal | None:
    """The principal an HTTP request was admitted as (left in its ASGI scope by the token gate)."""
    found = scope.get("principal")
    return found if isinstance(found, Principal) else None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


JWT_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512")


@dataclass(frozen=True)
class JwtRules:
    """How JWTs are verified; `key`: the shared secret (HS*) or the PEM public key (RS*, ES*)."""

    algorithm: str
    key: bytes
    issuer: str | None = None
    audience: str | None = None
    roles_claim: str = "roles"

    def principal(self, token: str) -> Principal | None:
        import jwt   # loaded with the tokens file that asks for JWTs (`_jwt_rules`)

        try:
            claims = jwt.decode(token, self.key, algorithms=[self.algorithm], issuer=self.issuer,
                                audience=self.audience, options={"require": ["exp", "sub"]})
        except jwt.PyJWTError:
            return None
        roles, types = claims.get(self.roles_claim), claims.get("task_types")
        if (not isinstance(roles, list) or not roles or any(r not in ROLES for r in roles)
                or not isinstance(claims.get("sub"), str)):
            return None
        if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) for t in types)):
            return None
        namespace = claims.get("ns")
        if namespace is not None and (not isinstance(namespace, str) or not namespaces.NAMESPACE.match(namespace)):
            return None
        return Principal(claims["sub"], frozenset(roles), frozenset(types) if types is not None else None, namespace)


class Tokens:
    """The known tokens; `find(token)` is the principal a presented token belongs to, or None."""

    def __init__(self, principals: dict[bytes, Principal], jwt_rules: JwtRules | None = None) -> None:
        self._by_digest = principals
        self.jwt_rules = jwt_rules

    def __len__(self) -> int:
        return len(self._by_digest)

    def find(self, token: str) -> Principal | None:
        if not token or len(token) > 8192:
            return None
        # Looked up by the SHA-256 of the token: the time a lookup takes tells nothing about any
        # stored token's bytes (finding one would need a preimage), and it stays O(1) per call.
        found = self._by_digest.get(_digest(token))
        if found is None and self.jwt_rules is not None and token.count(".") == 2:
            found = self.jwt_rules.principal(token)
        return found

    def named(self, name: str, token: str) -> Principal | None:
        """The principal called `name` if `token` is its token (a key id and secret exchange)."""
        principal = self.find(token)
        return principal if principal is not None and principal.name == name else None

    @classmethod
    def from_document(cls, document: Any, jwt_key: bytes | None = None) -> Tokens:
        """`jwt_key`: the contents of `jwt.secret_file` or `jwt.public_key_file` (read by the caller)."""
        if not isinstance(document, dict):
            raise TokensError("the tokens file must be a mapping with `tokens:` and/or `jwt:`")
        rules = _jwt_rules(document.get("jwt"), jwt_key)
        entries = document.get("tokens")
        if entries is None and rules is not None:
            return cls({}, rules)
        if not isinstance(entries, list) or not entries:
            raise TokensError("the tokens file must hold `tokens:`, a non-empty list (or `jwt:`)")
        if len(entries) > MAX_TOKENS:
            raise TokensError(f"at most {MAX_TOKENS} tokens")
        principals: dict[bytes, Principal] = {}
        for index, entry in enumerate(entries):
            where = f"tokens[{index}]"
            if not isinstance(entry, dict):
                raise TokensError(f"{where} must be an object")
            name, roles = entry.get("name"), entry.get("roles")
            if not isinstance(name, str) or not name.strip():
                raise TokensError(f"{where}: `name` is required")
            if not isinstance(roles, list) or not roles or any(r not in ROLES for r in roles):
                raise TokensError(f"{where} ({name}): `roles` must list some of {', '.join(ROLES)}")
            secret, hashed = entry.get("token"), entry.get("sha256")
            if isinstance(hashed, int) or isinstance(secret, int):
                raise TokensError(f"{where} ({name}): quote the token or digest (YAML read it as a number)")
            if isinstance(secret, str) and len(secret) >= 16:
                digest = _digest(secret)
            elif isinstance(hashed, str) and len(hashed) == 64:
                try:
                    digest = bytes.fromhex(hashed)
                except ValueError:
                    raise TokensError(f"{where} ({name}): `sha256` is not hex") from None
            else:
                raise TokensError(f"{where} ({name}): give `token` (at least 16 characters) or `sha256` "
                                  "(the token's hex SHA-256)")
            types = entry.get("task_types")
            if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) for t in types)):
                raise TokensError(f"{where} ({name}): `task_types` must be a list of task type names")
            if digest in principals:
                raise TokensError(f"{where} ({name}): the same token is listed twice")
            namespace = entry.get("namespace")
            if namespace is not None and (not isinstance(namespace, str) or not namespaces.NAMESPACE.match(namespace)):
                raise TokensError(f"{where} ({name}): `namespace` must be a namespace name (lower-case letters, "
                                  "digits, '-' and '_', starting with a letter or digit)")
            principals[digest] = Principal(name.strip(), frozenset(roles),
                                           frozenset(types) if types is not None else None, namespace)
        return cls(principals, rules)


def jwt_key_file(document: Any) -> str | None:
    """The file the `jwt:` section names for its key, for the caller to read."""
    section = document.get("jwt") if isinstance(document, dict) else None
    if not isinstance(section, dict):
        return None
    name = section.get("secret_file") or section.get("public_key_file")
    return name if isinstance(name, str) and name else None


def _jwt_rules(section: Any, key: bytes | None) -> JwtRules | None:
    if section is None:
        return None
    if not isinstance(section, dict):
        raise TokensError("`jwt:` must be a mapping (algorithm, secret_file or public_key_file, issuer, audience)")
    algorithm = section.get("algorithm")
    if algorithm not in JWT_ALGORITHMS:
        raise TokensError(f"jwt.algorithm must be one of {', '.join(JWT_ALGORITHMS)}")
    if not key:
        raise TokensError("jwt: give `secret_file` (HS*) or `public_key_file` (RS*, ES*), a file with the key")
    if algorithm.startswith("HS") and len(key.strip()) < 32:
        raise TokensError("jwt: an HS* secret must have at least 32 bytes")
    claim = section.get("roles_claim", "roles")
    for name in ("issuer", "audience"):
        if section.get(name) is not None and not isinstance(section[name], str):
            raise TokensError(f"jwt.{name} must be text")
    # PyJWT loads `cryptography` (for RS* and ES*): 0.18 of the 2 s a node takes to import on this machine
    # (2026-12-07), so only a node whose tokens file asks for JWTs imports it, as it reads the file
    import jwt  # noqa: F401
    return JwtRules(algorithm, key.strip() if algorithm.startswith("HS") else key, section.get("issuer"),
                    section.get("audience"), claim if isinstance(claim, str) and claim else "roles")
