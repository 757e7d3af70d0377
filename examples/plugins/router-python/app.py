"""A router component in Python: the default rules plus private user channels.

- A token may subscribe to the channels its `channels` globs match, as with
  the built-in router, and also to `private-<its user_id>` without listing it.
- A client may publish where its `publish` globs match.
- An app's publish to a user also reaches that user's private channel, so a
  page that listens on `private-<user>` sees what goes to the user's inbox.

Build (needs `pip install componentize-py==0.25.1`):

    componentize-py -d ../../../wit -w router-plugin componentize app -o router.wasm
"""

import re

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import router

CHANNEL_NAME = re.compile(r"[A-Za-z0-9_\-=@,.;:]{1,200}")
PRIVATE_PREFIX = "private-"


def glob_matches(glob: str, name: str) -> bool:
    """`*` matches any run of characters; everything else matches itself."""
    pattern = ".*".join(re.escape(part) for part in glob.split("*"))
    return re.fullmatch(pattern, name, flags=re.DOTALL) is not None


def check_channel(channel: str) -> None:
    if CHANNEL_NAME.fullmatch(channel) is None:
        raise Err(router.RouteError_InvalidChannel(
            "a channel name is 1 to 200 characters of A-Z a-z 0-9 _ - = @ , . ; :"
        ))


def check_event(event: str) -> None:
    if not 1 <= len(event) <= 100 or not event.isprintable() or not event.isascii():
        raise Err(router.RouteError_Invalid("an event name is 1 to 100 printable ASCII characters"))


class Router(exports.Router):
    def authorize_subscribe(self, claims, channel: str) -> None:
        check_channel(channel)
        if claims.user_id is not None and channel == PRIVATE_PREFIX + claims.user_id:
            return
        if any(glob_matches(glob, channel) for glob in claims.channels):
            return
        raise Err(router.RouteError_Forbidden(f"the token does not allow subscribing to {channel!r}"))

    def authorize_publish(self, claims, channel: str, event: str) -> router.ClientPublication:
        check_channel(channel)
        check_event(event)
        if any(glob_matches(glob, channel) for glob in claims.publish):
            return router.ClientPublication(channel=channel, event=event)
        raise Err(router.RouteError_Forbidden(f"the token does not allow publishing to {channel!r}"))

    def route_publish(self, target, event: str):
        check_event(event)
        if isinstance(target, router.Target_Channel):
            check_channel(target.value)
            return [target]
        if not 1 <= len(target.value) <= 256:
            raise Err(router.RouteError_Invalid("a user id or access id is 1 to 256 bytes long"))
        if isinstance(target, router.Target_User):
            private = PRIVATE_PREFIX + target.value
            if CHANNEL_NAME.fullmatch(private) is not None:
                return [target, router.Target_Channel(private)]
        return [target]
