"""Personal API tokens for automation: make one for a service account, list who holds
which, revoke one or all of a user's.

Why it exists: a script or a deployment pipeline cannot click through the settings page,
and operations staff revoke a leaked token from a shell at night. `create` prints the
secret alone on stdout (everything else goes to stderr), so `TOKEN=$(manage.py api_token
create ...)` captures it; it is never shown again.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q
from django.utils import timezone

from assistant.errors import ServiceError
from assistant.models import ApiToken
from assistant.staff import common
from assistant.staff.common import StaffError
from assistant.tokens.service import token_create, token_revoke


class Command(BaseCommand):
    help = (
        "Personal API tokens. 'api_token create USER --name NAME [--days N]' makes one and "
        "prints its secret on stdout, once; 'api_token list [--user USER] [--all]' lists "
        "tokens (usable ones unless --all); 'api_token revoke TOKEN' revokes one by its id "
        "or prefix, 'api_token revoke --user USER' all of a user's. Revoking ends the "
        "token's open event streams within a second."
    )

    def add_arguments(self, parser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="create|list|revoke")
        create = actions.add_parser("create", help="Make a token; its secret goes to stdout.")
        create.add_argument("user", metavar="USER", help="The user name the token acts as.")
        create.add_argument("--name", required=True, help="What the token is for.")
        create.add_argument(
            "--days", type=int, help="Days until it expires (default ASSISTANT_TOKEN_DEFAULT_DAYS)."
        )
        create.add_argument(
            "--no-expiry",
            action="store_true",
            help="Never expires (only where ASSISTANT_TOKEN_MAX_DAYS is 0).",
        )
        listing = actions.add_parser("list", help="List tokens, newest first.")
        listing.add_argument("--user", help="Only this user's.")
        listing.add_argument("--all", action="store_true", help="Expired and revoked ones too.")
        revoke = actions.add_parser("revoke", help="Revoke a token, or every token of a user.")
        revoke.add_argument("token", nargs="?", metavar="TOKEN", help="The token's id or prefix (ast_…).")
        revoke.add_argument("--user", help="Revoke every usable token of this user.")
        revoke.add_argument("--actor", help="Who revokes, as recorded (default: the operating system user).")

    def handle(self, *args, **options) -> None:
        try:
            getattr(self, f"_{options['action']}")(options)
        except (StaffError, ServiceError) as error:
            raise CommandError(getattr(error, "message", error)) from None

    def _create(self, options) -> None:
        if options["no_expiry"] and options["days"] is not None:
            raise StaffError("Give --days or --no-expiry, not both.")
        days = None if options["no_expiry"] else options["days"] or settings.ASSISTANT_TOKEN_DEFAULT_DAYS
        user = common.user_get(options["user"])
        token, secret = token_create(user=user, name=options["name"], days=days)
        self.stdout.write(secret)
        if options["verbosity"] >= 1:
            until = f"until {token.expires_at:%Y-%m-%d %H:%M %Z}" if token.expires_at else "without expiry"
            self.stderr.write(
                f"Token {token.pk} ({token.prefix}…) for {user.get_username()}, {until}. "
                "Its secret is above; it is not shown again."
            )

    def _list(self, options) -> None:
        tokens = ApiToken.objects.select_related("user").order_by("-created_at", "-id")
        if options["user"]:
            tokens = tokens.filter(user=common.user_get(options["user"]))
        if not options["all"]:
            tokens = tokens.usable()
        now = timezone.now()
        self.stdout.write("id\tuser\tname\tprefix\tcreated\tlast used\texpires\tstate")
        for token in tokens.iterator():
            self.stdout.write(
                "\t".join(
                    [
                        str(token.pk),
                        token.user.get_username(),
                        token.name,
                        token.prefix,
                        _when(token.created_at),
                        _when(token.last_used_at),
                        _when(token.expires_at),
                        token.state(now),
                    ]
                )
            )

    def _revoke(self, options) -> None:
        if bool(options["token"]) == bool(options["user"]):
            raise StaffError("Name one token (its id or prefix) or --user, not both.")
        if options["user"]:
            tokens = list(
                ApiToken.objects.filter(user=common.user_get(options["user"]), revoked_at__isnull=True)
            )
        else:
            key = options["token"]
            match = Q(prefix=key) | Q(pk=int(key)) if key.isdigit() else Q(prefix=key)
            tokens = list(ApiToken.objects.filter(match))
            if not tokens:
                raise StaffError(f"There is no token {key}.")
            if len(tokens) > 1:
                raise StaffError(f"{key} names {len(tokens)} tokens; give the id.")
        by = (options["actor"] or common.shell_actor())[:150]
        revoked = sum(token_revoke(token=token, by=by) for token in tokens)
        if options["verbosity"] >= 1:
            self.stdout.write(f"Revoked {revoked} token{'s' if revoked != 1 else ''}.")


def _when(value) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M") if value else "-"
