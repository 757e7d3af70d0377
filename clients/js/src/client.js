// The madx-pusher client: one WebSocket per client, one-time TOTP connection
// strings, reconnects by close code, and resume without loss or duplicates.

import { checkOtpParams, hotp, importKey } from './totp.js';
import {
  DEFAULT_BACKOFF,
  chooseStep,
  closeAction,
  edgeMargin,
  maxId,
  reconnectDelay,
} from './policy.js';

/**
 * A token as `POST /v1/tokens` returns it (the app's back-end calls that
 * endpoint and hands the result to its page).
 * @typedef {object} Token
 * @property {string} access_id
 * @property {string} secret_seed base32 TOTP key
 * @property {import('./totp.js').OtpParams} otp how codes are computed
 * @property {string} ws_url where to connect (carries `?app=<id>`)
 * @property {number} [expires_in] idle timeout in seconds
 */

/**
 * A `message` frame.
 * @typedef {object} Message
 * @property {string} id decimal id, increasing within the app
 * @property {string} channel the channel, or `#user` / `#token` for inboxes
 * @property {string} event
 * @property {unknown} data
 */

/**
 * An `error` frame from the server, or a client-side failure (code 0).
 * @typedef {object} PusherError
 * @property {number} code 4300-4399 for a refused frame (socket stays open),
 *   a close code when the connection was refused or closed, 0 when
 *   `refreshToken()` failed
 * @property {string} reason e.g. `forbidden`, `otp_reused`, `refresh_failed`
 * @property {string} [message]
 * @property {string} [frame] the client frame type it answers
 * @property {string} [channel]
 */

/**
 * `idle` before `connect()`; `connecting` while a socket opens; `connected`
 * after `welcome`; `reconnecting` while waiting before the next attempt;
 * `failed` when the token is gone and no `refreshToken` was given; `closed`
 * after `close()`.
 * @typedef {'idle' | 'connecting' | 'connected' | 'reconnecting' | 'failed' | 'closed'} State
 */

/**
 * @typedef {object} StateChange
 * @property {State} previous
 * @property {State} current
 * @property {number} [code] the close code that caused it
 * @property {string} [reason] the close reason (from the server's error frame)
 * @property {number} [delayMs] wait before the next attempt (`reconnecting`)
 */

/**
 * @typedef {object} ClientOptions
 * @property {() => Promise<Token>} [refreshToken] asks the app's back-end for
 *   a new token, when the current one is unknown, expired or revoked
 * @property {typeof WebSocket} [WebSocket] constructor; default the global one
 * @property {import('./policy.js').BackoffOptions} [backoff]
 * @property {number} [pingAfterMs] send a JSON `ping` after this long without
 *   any frame; default four server heartbeats (100 s); 0 turns the check off
 * @property {number} [pongTimeoutMs] treat the connection as lost when
 *   nothing answers that ping within this long (10000)
 * @property {number} [connectTimeoutMs] give up on a handshake and welcome
 *   that take longer (10000)
 * @property {string} [lastId] resume point (a message id) from an earlier
 *   client, e.g. kept in sessionStorage across a page reload
 * @property {() => number} [now] clock in ms (tests)
 * @property {() => number} [random] in [0, 1) (tests)
 */

/** Recent ids kept to drop a repeat (a replay overlapping live delivery). */
const SEEN_LIMIT = 1024;
/** The stream key of both inboxes: one `last_id` covers them. */
const INBOX = '#inbox';

/**
 * @typedef {object} Stream
 * @property {string | undefined} since last id received, or a safe floor
 * @property {Set<(data: unknown, message: Message) => void>} handlers
 * @property {boolean} refused the server refused the subscription for good
 * @property {boolean} confirmed `subscribed` arrived on this connection
 * @property {Array<{resolve: () => void, reject: (e: Error) => void}>} waiting
 *   `ready` promises of subscribe() calls
 * @property {Map<string, unknown> | null} members a presence channel's
 *   members (user id -> user_info), once `subscribed` listed them
 */

/**
 * A presence channel's change, for `onPresence` handlers.
 * @typedef {object} PresenceChange
 * @property {string} channel
 * @property {'members' | 'member_added' | 'member_removed'} kind `members`:
 *   the whole list arrived (after each subscribe and reconnect)
 * @property {string} [userId] the member added or removed
 * @property {unknown} [userInfo] the added member's `user_info`
 * @property {ReadonlyMap<string, unknown>} members every member now
 */

/**
 * What `subscribe()` returns.
 * @typedef {object} Subscription
 * @property {string} channel
 * @property {Promise<void>} ready resolves when the server confirms the
 *   subscription, rejects (with the error frame as `cause`) if it refuses
 * @property {() => void} unsubscribe removes this handler
 */

/** @returns {Stream} */
function newStream() {
  return {
    since: undefined, handlers: new Set(), refused: false, confirmed: false, waiting: [], members: null,
  };
}

export class MadxClient {
  /**
   * @param {Token} token
   * @param {ClientOptions} [options]
   */
  constructor(token, options = {}) {
    this._t = useToken(token);
    this._options = options;
    this._backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this._now = options.now || Date.now;
    this._random = options.random || Math.random;
    /** @type {State} */
    this.state = 'idle';
    /**
     * The current connection's id (`welcome`'s `connection_id`), to hand to
     * your back-end as the `socket_id` that excludes this connection from
     * its publish; `null` until welcomed, and between connections.
     * @type {string | null}
     */
    this.connectionId = null;
    /** @type {WebSocket | null} */
    this._socket = null;
    /** Bumped for every socket and timer, so stale callbacks do nothing. */
    this._generation = 0;
    /** Failed attempts since the last welcome. */
    this._attempt = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._timer = undefined;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this._watchdog = undefined;
    /** When the last frame arrived (ms). */
    this._heardAt = 0;
    /** @type {Stream} */
    this._inbox = newStream();
    this._inbox.since = options.lastId;
    /** @type {Map<string, Stream>} */
    this._channels = new Map();
    /** Highest id received so far, from any stream. @type {string | undefined} */
    this._high = undefined;
    /** @type {Set<string>} */
    this._seen = new Set();
    /** @type {Map<string, Set<(value: any, message?: any) => void>>} */
    this._listeners = new Map();
    /** @type {Array<{resolve: () => void, reject: (e: Error) => void}>} */
    this._waiting = [];
    /** What the pending timer will do. @type {() => void} */
    this._next = () => {};
    // Back online: skip the rest of the back-off (a step wait stays a wait,
    // as chooseStep decides again).
    this._onOnline = () => {
      if (this.state === 'reconnecting') this._schedule(0, this._next);
    };
  }

  /** The highest message id received, to resume from after a page reload. */
  get lastId() {
    return this._high;
  }

  /**
   * Open the connection; resolves at the first `welcome`, rejects if the
   * client fails or is closed first. Reconnects by itself afterwards.
   * @returns {Promise<void>}
   */
  connect() {
    if (this.state === 'connected') return Promise.resolve();
    /** @type {Promise<void>} */
    const ready = new Promise((resolve, reject) => this._waiting.push({ resolve, reject }));
    // A caller that does not await connect() must not get an unhandled
    // rejection when the client is closed before it connects.
    ready.catch(() => {});
    if (this.state === 'idle' || this.state === 'failed' || this.state === 'closed') {
      if (typeof addEventListener === 'function') addEventListener('online', this._onOnline);
      this._attempt = 0;
      this._attemptNow();
    }
    return ready;
  }

  /**
   * Close the connection and stop reconnecting. `connect()` starts again.
   */
  close() {
    this._generation++;
    clearTimeout(this._timer);
    this._stopWatchdog();
    if (typeof removeEventListener === 'function') removeEventListener('online', this._onOnline);
    const socket = this._socket;
    this._socket = null;
    if (socket) socket.close(1000, 'client closed');
    this._setState('closed');
    this._settle(new Error('closed'));
  }

  /**
   * Receive a channel's messages (the token's `channels` globs must allow
   * it). Subscriptions are renewed after every reconnect, resuming where
   * they left off. The channel is left when its last handler goes.
   * @param {string} channel
   * @param {(data: unknown, message: Message) => void} handler
   * @returns {Subscription}
   */
  subscribe(channel, handler) {
    let stream = this._channels.get(channel);
    if (!stream) {
      stream = newStream();
      this._channels.set(channel, stream);
      if (this.state === 'connected') this._sendSubscribe(channel, stream);
    }
    stream.handlers.add(handler);
    const current = stream;
    /** @type {Promise<void>} */
    const ready = current.confirmed
      ? Promise.resolve()
      : new Promise((resolve, reject) => current.waiting.push({ resolve, reject }));
    ready.catch(() => {}); // awaiting it is optional
    return {
      channel,
      ready,
      unsubscribe: () => {
        if (this._channels.get(channel) !== current) return;
        current.handlers.delete(handler);
        if (current.handlers.size === 0) this.unsubscribe(channel);
      },
    };
  }

  /**
   * Leave a channel and drop all its handlers.
   * @param {string} channel
   */
  unsubscribe(channel) {
    if (!this._channels.delete(channel)) return;
    this._send({ type: 'unsubscribe', channel });
  }

  /**
   * Publish to a channel from this socket (the token's `publish` globs must
   * allow it; a refusal arrives as an `error` event). Nothing is queued while
   * disconnected: the result says whether the frame was sent.
   * @param {string} channel
   * @param {string} event
   * @param {unknown} data any JSON value
   * @returns {boolean}
   */
  publish(channel, event, data) {
    if (this.state !== 'connected') return false;
    return this._send({ type: 'publish', channel, event, data });
  }

  /**
   * Listen to messages with this `event` name, from any stream (inboxes and
   * subscribed channels); `'*'` receives every message.
   * @param {string} event
   * @param {(data: unknown, message: Message) => void} handler
   * @returns {() => void} removes the handler
   */
  on(event, handler) {
    return this._listen(`message:${event}`, handler);
  }

  /**
   * Connection state changes.
   * @param {(change: StateChange) => void} handler
   * @returns {() => void} removes the handler
   */
  onState(handler) {
    return this._listen('state', handler);
  }

  /**
   * Refused frames (4300-4399), refused or closed connections, failed token
   * refreshes.
   * @param {(error: PusherError) => void} handler
   * @returns {() => void} removes the handler
   */
  onError(handler) {
    return this._listen('error', handler);
  }

  /**
   * The members of a presence channel this client is subscribed to (user
   * id -> `user_info`, `undefined` when the token had none), or `undefined`
   * before the server listed them (and for other channels).
   * @param {string} channel
   * @returns {ReadonlyMap<string, unknown> | undefined}
   */
  members(channel) {
    const members = this._channels.get(channel)?.members;
    return members ? new Map(members) : undefined;
  }

  /**
   * Presence changes of subscribed presence channels: the list on every
   * (re)subscribe, then each member added or removed, once per user
   * however many sockets the user has.
   * @param {(change: PresenceChange) => void} handler
   * @returns {() => void} removes the handler
   */
  onPresence(handler) {
    return this._listen('presence', handler);
  }

  /**
   * The server's history no longer reached back to where this client
   * resumed (`recovered: false`), so messages may be missing: reload the
   * app's state. `channel` is `'#inbox'` for the inboxes.
   * @param {(gap: {channel: string}) => void} handler
   * @returns {() => void} removes the handler
   */
  onGap(handler) {
    return this._listen('gap', handler);
  }

  // --- connecting -------------------------------------------------------

  /** Choose a code and open a socket, or wait until one is free. */
  async _attemptNow() {
    const generation = ++this._generation;
    const { period, digits } = this._t.otp;
    const choice = chooseStep(this._now(), period, this._t.used, edgeMargin(period));
    if ('waitMs' in choice) {
      this._setState('reconnecting', { delayMs: choice.waitMs });
      this._schedule(choice.waitMs, () => this._attemptNow());
      return;
    }
    for (const step of this._t.used) if (step < choice.step - 2) this._t.used.delete(step);
    this._setState('connecting');
    let code;
    try {
      code = await hotp(await this._t.key, choice.step, digits);
    } catch (error) {
      this._emit('error', { code: 0, reason: 'otp_failed', message: String(error) });
      this._fail();
      return;
    }
    if (generation !== this._generation) return;

    const token = this._t.token;
    let url = `${token.ws_url}${token.ws_url.includes('?') ? '&' : '?'}` +
      `access_id=${encodeURIComponent(token.access_id)}&otp=${code}`;
    if (this._inbox.since !== undefined) url += `&last_id=${this._inbox.since}`;
    const resumed = this._inbox.since !== undefined;
    const Socket = this._options.WebSocket || globalThis.WebSocket;
    /** @type {WebSocket} */
    let socket;
    try {
      socket = new Socket(url);
    } catch (error) {
      this._lost(generation, 1006, String(error));
      return;
    }
    this._socket = socket;
    /** @type {PusherError | undefined} the error frame before a close */
    let refusal;
    let welcomed = false;
    let finished = false;
    /**
     * @param {number} closeCode
     * @param {string} reason
     */
    const finish = (closeCode, reason) => {
      if (finished || generation !== this._generation) return;
      finished = true;
      clearTimeout(handshakeTimer);
      socket.onmessage = socket.onclose = socket.onerror = null;
      if (refusal) this._emit('error', refusal);
      this._lost(generation, closeCode, (refusal && refusal.reason) || reason);
    };
    // A handshake that never completes (a half-dead node or proxy) must not
    // leave the client waiting for ever.
    const handshakeTimer = setTimeout(() => {
      if (welcomed) return;
      socket.close();
      finish(1006, 'connect timeout');
    }, this._options.connectTimeoutMs || 10000);
    socket.onmessage = (event) => {
      if (finished || generation !== this._generation) return;
      this._heardAt = this._now();
      // The server has looked at the code: it is spent (welcome) or no good
      // (refusal). A connection that failed before any frame may not have
      // reached the server, so its code stays available; at worst reusing
      // it costs a 4003, which does not count as a wrong code.
      if (!welcomed) this._t.used.add(choice.step);
      let frame;
      try {
        frame = JSON.parse(String(event.data));
      } catch {
        return; // the server only sends JSON; ignore anything else
      }
      if (frame.type === 'welcome') {
        welcomed = true;
        clearTimeout(handshakeTimer);
        this._welcome(frame, resumed);
      } else if (frame.type === 'error' && !welcomed) {
        refusal = frame;
      } else {
        this._frame(frame);
      }
    };
    socket.onclose = (event) => finish(event.code, event.reason);
    // Browsers fire `error` only before an abnormal close (1006); some
    // runtimes never fire the close after a failed handshake.
    socket.onerror = () => finish(refusal ? refusal.code : 1006, 'connection failed');
  }

  /**
   * @param {{connection_id?: string, heartbeat_s?: number, recovered?: boolean, last_id?: string}} frame
   * @param {boolean} resumed `last_id` was sent
   */
  _welcome(frame, resumed) {
    this._attempt = 0;
    this.connectionId = frame.connection_id || null;
    if (resumed && frame.recovered === false) this._emit('gap', { channel: INBOX });
    if (!resumed) {
      // Nothing received yet: anything for this socket from now on has a
      // higher id than the server's position (when announced) or than this
      // connect time less the largest clock difference the OTP window lets
      // through, since ids are at least the publish time in microseconds.
      this._inbox.since = frame.last_id || this._timeFloor();
    }
    for (const [channel, stream] of this._channels) {
      stream.confirmed = false;
      if (!stream.refused) this._sendSubscribe(channel, stream);
    }
    this._startWatchdog((frame.heartbeat_s || 25) * 1000);
    this._setState('connected');
    this._settle();
  }

  /**
   * A lower bound for ids published from now on, as a decimal id string.
   * @returns {string}
   */
  _timeFloor() {
    const skewMs = 2 * this._t.otp.period * 1000 + 5000;
    return `${Math.max(0, Math.floor(this._now() - skewMs))}000`;
  }

  /**
   * The socket closed (or never opened): decide what comes next.
   * @param {number} generation
   * @param {number} code
   * @param {string} reason
   */
  _lost(generation, code, reason) {
    if (generation !== this._generation) return;
    this._socket = null;
    this._stopWatchdog();
    let action = closeAction(code);
    if (action === 'locked') action = this._options.refreshToken ? 'token' : 'backoff';
    if (action === 'stop') {
      this._fail(code, reason);
      return;
    }
    if (action === 'token') {
      if (!this._options.refreshToken) {
        this._fail(code, reason);
        return;
      }
      const delayMs = reconnectDelay(action, this._attempt++, this._backoff, this._random);
      this._setState('reconnecting', { code, reason, delayMs });
      this._schedule(delayMs, () => this._refresh());
      return;
    }
    // The server will never resume from this position: go on without it
    // (`welcome` announces the position to follow from).
    if (action === 'position') {
      this._inbox.since = undefined;
      this._emit('gap', { channel: INBOX });
    }
    let delayMs = reconnectDelay(action, this._attempt, this._backoff, this._random);
    // 4003 is not a failure: another code of the window may be free.
    if (action !== 'code') this._attempt++;
    if (action === 'clock') {
      // The next code worth trying is the next step's.
      const stepMs = this._t.otp.period * 1000;
      delayMs = Math.max(delayMs, stepMs - (this._now() % stepMs));
    }
    this._setState('reconnecting', { code, reason, delayMs });
    this._schedule(delayMs, () => this._attemptNow());
  }

  /** Ask the app for a new token, then connect with it. */
  async _refresh() {
    const generation = ++this._generation;
    this._setState('connecting');
    let token;
    try {
      token = await /** @type {() => Promise<Token>} */ (this._options.refreshToken)();
      if (generation !== this._generation) return;
      this._t = useToken(token);
    } catch (error) {
      if (generation !== this._generation) return;
      this._emit('error', { code: 0, reason: 'refresh_failed', message: String(error) });
      const delayMs = reconnectDelay('backoff', this._attempt++, this._backoff, this._random);
      this._setState('reconnecting', { delayMs });
      this._schedule(delayMs, () => this._refresh());
      return;
    }
    this._attemptNow();
  }

  /**
   * @param {number} [code]
   * @param {string} [reason]
   */
  _fail(code, reason) {
    this._generation++;
    this._setState('failed', { code, reason });
    this._settle(new Error(`connection failed${code ? ` with ${code} ${reason}` : ''}`));
  }

  /**
   * @param {number} delayMs
   * @param {() => void} action
   */
  _schedule(delayMs, action) {
    clearTimeout(this._timer);
    this._next = action;
    const generation = this._generation;
    this._timer = setTimeout(() => {
      if (generation === this._generation) action();
    }, delayMs);
  }

  /**
   * Browsers answer the server's WebSocket pings by themselves but cannot
   * see them; a connection that died silently (a laptop asleep, a dropped
   * route) is noticed by a JSON ping that gets no answer.
   * @param {number} heartbeatMs
   */
  _startWatchdog(heartbeatMs) {
    this._stopWatchdog();
    const after = this._options.pingAfterMs ?? 4 * heartbeatMs;
    if (!after) return;
    const generation = this._generation;
    const patience = this._options.pongTimeoutMs || 10000;
    this._heardAt = this._now();
    /** @type {number | undefined} */
    let pingedAt;
    this._watchdog = setInterval(() => {
      const now = this._now();
      if (pingedAt !== undefined && this._heardAt < pingedAt && now - pingedAt >= patience) {
        const socket = this._socket;
        this._socket = null;
        if (socket) {
          socket.onmessage = socket.onclose = socket.onerror = null;
          socket.close();
        }
        this._lost(generation, 1006, 'no answer to ping');
      } else if (now - this._heardAt >= after && (pingedAt === undefined || this._heardAt >= pingedAt)) {
        pingedAt = now;
        this._send({ type: 'ping' });
      }
    }, Math.min(after, patience) / 2);
  }

  _stopWatchdog() {
    clearInterval(this._watchdog);
    this._watchdog = undefined;
  }

  // --- frames -----------------------------------------------------------

  /** @param {any} frame */
  _frame(frame) {
    switch (frame.type) {
      case 'message':
        this._message(frame);
        break;
      case 'subscribed': {
        const stream = this._channels.get(frame.channel);
        if (!stream) break;
        stream.confirmed = true;
        for (const { resolve } of stream.waiting.splice(0)) resolve();
        if (frame.recovered === false) this._emit('gap', { channel: frame.channel });
        // A fresh subscription (no `since`, so no replay follows): every
        // message of it has a higher id than anything received before this
        // answer, all of which was published before the server registered
        // the subscription; resume from there after a reconnect. The time
        // floor is only the fallback: it trusts the clocks.
        if (stream.since === undefined) stream.since = frame.last_id || this._high || this._timeFloor();
        if (Array.isArray(frame.members)) {
          stream.members = new Map(frame.members.map((member) => [member.user_id, member.user_info]));
          this._presence(frame.channel, stream, { kind: 'members' });
        }
        break;
      }
      case 'member_added':
      case 'member_removed':
        this._member(frame);
        break;
      case 'error':
        this._refused(frame);
        break;
      default: // unsubscribed, pong: nothing to do
    }
  }

  /** @param {Message} message */
  _message(message) {
    if (typeof message.id !== 'string') return;
    // Inbox messages carry `#user`/`#token`; a channel we did not subscribe
    // to can only have come through an inbox (a router may label it so).
    const stream = this._channels.get(message.channel) || this._inbox;
    // The server replays only what follows the position sent, so a repeat
    // can only be recent; an id is never dropped just for being lower than
    // the position, which would lose a message delivered out of order.
    if (this._seen.has(message.id)) return;
    stream.since = maxId(stream.since, message.id);
    this._high = maxId(this._high, message.id);
    this._seen.add(message.id);
    if (this._seen.size > SEEN_LIMIT) this._seen.delete(/** @type {string} */ (this._seen.values().next().value));

    for (const handler of [...stream.handlers]) this._call(handler, message);
    for (const handler of [...(this._listeners.get(`message:${message.event}`) || [])]) {
      this._call(handler, message);
    }
    for (const handler of [...(this._listeners.get('message:*') || [])]) this._call(handler, message);
  }

  /**
   * A member came or went. The list is a set by user id: an event that
   * repeats what `subscribed` listed changes nothing and is not reported.
   * @param {any} frame
   */
  _member(frame) {
    const stream = this._channels.get(frame.channel);
    if (!stream?.members || typeof frame.user_id !== 'string') return;
    const known = stream.members.has(frame.user_id);
    if (frame.type === 'member_added') {
      stream.members.set(frame.user_id, frame.user_info);
      if (known) return;
      this._presence(frame.channel, stream,
        { kind: 'member_added', userId: frame.user_id, userInfo: frame.user_info });
    } else {
      if (!known) return;
      stream.members.delete(frame.user_id);
      this._presence(frame.channel, stream, { kind: 'member_removed', userId: frame.user_id });
    }
  }

  /**
   * @param {string} channel
   * @param {Stream} stream
   * @param {{kind: PresenceChange['kind'], userId?: string, userInfo?: unknown}} change
   */
  _presence(channel, stream, change) {
    this._emit('presence', { channel, ...change, members: new Map(stream.members) });
  }

  /** @param {PusherError} error */
  _refused(error) {
    if (error.frame === 'subscribe' && error.channel) {
      const stream = this._channels.get(error.channel);
      // 4307: the router failed for now; try again on the next connect.
      if (stream && error.code !== 4307) stream.refused = true;
      if (stream) {
        const refusal = new Error(`subscribe ${error.channel} refused: ${error.code} ${error.reason}`,
          { cause: error });
        for (const { reject } of stream.waiting.splice(0)) reject(refusal);
      }
    }
    this._emit('error', error);
  }

  /**
   * @param {string} channel
   * @param {Stream} stream
   */
  _sendSubscribe(channel, stream) {
    /** @type {{type: string, channel: string, since?: string}} */
    const frame = { type: 'subscribe', channel };
    if (stream.since !== undefined) frame.since = stream.since;
    this._send(frame);
  }

  /**
   * @param {object} frame
   * @returns {boolean} sent
   */
  _send(frame) {
    const socket = this._socket;
    if (!socket || socket.readyState !== 1) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  // --- events -----------------------------------------------------------

  /**
   * @param {string} name
   * @param {(value: any, message?: any) => void} handler
   * @returns {() => void}
   */
  _listen(name, handler) {
    let set = this._listeners.get(name);
    if (!set) this._listeners.set(name, (set = new Set()));
    set.add(handler);
    return () => set.delete(handler);
  }

  /**
   * @param {string} name
   * @param {unknown} value
   */
  _emit(name, value) {
    for (const handler of [...(this._listeners.get(name) || [])]) {
      try {
        handler(value);
      } catch (error) {
        reportError(error);
      }
    }
  }

  /**
   * @param {(data: unknown, message: Message) => void} handler
   * @param {Message} message
   */
  _call(handler, message) {
    try {
      handler(message.data, message);
    } catch (error) {
      reportError(error); // an app handler's bug must not stop delivery
    }
  }

  /**
   * @param {State} current
   * @param {{code?: number, reason?: string, delayMs?: number}} [details]
   */
  _setState(current, details = {}) {
    const previous = this.state;
    if (previous === current && current !== 'reconnecting') return;
    this.state = current;
    if (current !== 'connected') this.connectionId = null;
    this._emit('state', { previous, current, ...details });
  }

  /** @param {Error} [error] resolve the `connect()` promises, or reject them */
  _settle(error) {
    const waiting = this._waiting;
    this._waiting = [];
    for (const { resolve, reject } of waiting) error ? reject(error) : resolve();
  }
}

/**
 * Check a token and prepare what connecting with it needs.
 * @param {Token} token
 */
function useToken(token) {
  if (!token || typeof token.access_id !== 'string' || typeof token.secret_seed !== 'string' ||
      typeof token.ws_url !== 'string') {
    throw new Error('a token needs access_id, secret_seed, otp and ws_url');
  }
  const otp = checkOtpParams(token.otp);
  return {
    token,
    otp,
    /** Importing the key is the slow part of a code: once per token. */
    key: importKey(token.secret_seed, otp.algorithm),
    /** Steps whose codes are spent (by this client, or found so by 4003). @type {Set<number>} */
    used: new Set(),
  };
}

/** @param {unknown} error */
function reportError(error) {
  // Surface it like an uncaught error, without breaking the caller's loop.
  setTimeout(() => {
    throw error;
  });
}
