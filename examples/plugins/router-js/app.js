// A router component in JavaScript: the default rules plus team channels.
//
// - A token may subscribe to the channels its `channels` globs match, and
//   publish from its socket where its `publish` globs match, as with the
//   built-in router.
// - Team channels are the exception: `team-<x>` belongs to the users whose
//   id starts with `<x>-`. A member may subscribe and publish to it without
//   listing it; nobody else may, whatever their globs say (`*` included).
// - The prefix is a setting: `[plugins.router.settings] team_prefix = "..."`
//   in the host config (default `team-`).
//
// Build: `npm ci && npm run build` (see package.json), which writes
// router-js.wasm. package.json pins @bytecodealliance/preview2-shim itself:
// componentize-js 0.23.0 runs it at build time without declaring it, and
// with 0.26 the build cannot read the WIT directory.

import { get as setting } from "madx:pusher/settings@0.1.0";

const CHANNEL_NAME = /^[A-Za-z0-9_\-=@,.;:]{1,200}$/;
const EVENT_NAME = /^[\x20-\x7e]{1,100}$/;
const MAX_ID_LEN = 200;

// The contract's errors: a thrown `route-error` variant becomes the `err`
// side of the call's result.
const invalidChannel = (why) => ({ tag: "invalid-channel", val: why });
const forbidden = (why) => ({ tag: "forbidden", val: why });
const invalid = (why) => ({ tag: "invalid", val: why });

function checkChannel(channel) {
  if (!CHANNEL_NAME.test(channel)) {
    throw invalidChannel(
      "a channel name is 1 to 200 characters of A-Z a-z 0-9 _ - = @ , . ; :",
    );
  }
}

function checkEvent(event) {
  if (!EVENT_NAME.test(event)) {
    throw invalid("an event name is 1 to 100 printable ASCII characters");
  }
}

// `*` matches any run of characters (including none); everything else
// matches itself. One backtrack point, so a hostile glob like `*a*a*a*b`
// costs at most glob x name steps.
function globMatches(glob, name) {
  let g = 0;
  let n = 0;
  let star = -1; // where the last `*` was in the glob
  let starName = 0; // how far into the name that `*` has swallowed
  while (n < name.length) {
    if (g < glob.length && glob[g] === "*") {
      star = g++;
      starName = n;
    } else if (g < glob.length && glob[g] === name[n]) {
      g++;
      n++;
    } else if (star >= 0) {
      // Let the last `*` swallow one more character and retry.
      g = star + 1;
      n = ++starName;
    } else {
      return false;
    }
  }
  return glob.slice(g).split("").every((c) => c === "*");
}

const anyGlobMatches = (globs, name) => globs.some((glob) => globMatches(glob, name));

// A team channel (`<prefix><team>`) is its members' only: a user whose id
// starts with `<team>-` may subscribe and publish to it without listing it,
// and nobody else may, whatever their globs say. `true` for a member,
// `false` for an ordinary channel (the globs decide); throws otherwise.
function memberOfItsTeam(claims, channel) {
  const prefix = setting("team_prefix") || "team-";
  if (!channel.startsWith(prefix) || channel.length === prefix.length) return false;
  const team = channel.slice(prefix.length);
  if (claims.userId?.startsWith(`${team}-`)) return true;
  throw forbidden(`${JSON.stringify(channel)} is for the members of team ${team}`);
}

export const router = {
  authorizeSubscribe(claims, channel) {
    checkChannel(channel);
    if (memberOfItsTeam(claims, channel)) return;
    if (!anyGlobMatches(claims.channels, channel)) {
      throw forbidden(`the token does not allow subscribing to ${JSON.stringify(channel)}`);
    }
  },

  authorizePublish(claims, channel, event) {
    checkChannel(channel);
    checkEvent(event);
    if (!memberOfItsTeam(claims, channel) && !anyGlobMatches(claims.publish, channel)) {
      throw forbidden(`the token does not allow publishing to ${JSON.stringify(channel)}`);
    }
    return { channel, event };
  },

  routePublish(target, event) {
    checkEvent(event);
    if (target.tag === "channel") {
      checkChannel(target.val);
    } else if (target.val.length === 0 || new TextEncoder().encode(target.val).length > MAX_ID_LEN) {
      throw invalid(`a user id or access id is 1 to ${MAX_ID_LEN} bytes long`);
    }
    return [target];
  },
};
