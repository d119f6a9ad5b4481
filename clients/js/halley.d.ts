// Type declarations for halley.js (the global `Halley` and the ES module halley.mjs).

export type TransportName = 'websocket' | 'sse' | 'stream' | 'longpoll' | 'jsonp' | 'iframe';
export type State = 'connecting' | 'open' | 'reconnecting' | 'closed';

/** One message, whichever transport carried it. */
export interface Message {
  /** `<epoch>-<seq>`: the cursor after this message. */
  id: string;
  /** The topic it was published to; null over SSE with a wildcard subscription (SSE does not carry it). */
  topic: string | null;
  /** Publish time in ms since the epoch; null over SSE. */
  time: number | null;
  /** The publish's event name, if it had one. */
  event: string | null;
  /** JSON payloads as values, text as a string, binary as base64 (with `encoding`). */
  data: unknown;
  encoding?: 'base64';
}

/** Messages after the cursor fell out of the server's history (or the server restarted). */
export interface Gap {
  /** The oldest id the server still has, when it said. */
  oldest: string | null;
  next: string | null;
  /** The cursor the client resumed from. */
  cursor: string | null;
  transport: TransportName | null;
}

/** What on('error') reports. A refusal carries the server's status and one-line reason. */
export interface HalleyError extends Error {
  /** 401: no token, or a bad or expired one; 403: the token does not cover the topic. */
  status?: number;
  reason?: string;
  /** With a 403 on a subscription: its pattern (that subscription is left out, the others go on). */
  topic?: string;
}

export interface PublishAck {
  id: string;
  topic: string;
  time?: number;
  /** Subscribers on the receiving node that got it. */
  delivered: number;
}

export interface Options {
  /**
   * The token (docs/AUTH.md): WebSocket sends it in a first `auth` command, SSE, JSONP and the
   * iframe as the `token` query parameter, streaming, long-poll and publish as
   * `Authorization: Bearer`. A function is called before the first connection and again after
   * a 401 or the server's expiry notice (docs/CLIENT.md "Tokens").
   */
  token?: string | null | (() => string | null | Promise<string | null>);
  /** The transports to try, in order (default: all, in the order of `Halley.TRANSPORTS`). */
  transports?: TransportName[];
  /** ms a transport may take to open before the next one is tried (default 10000). */
  firstByteTimeout?: number;
  /** ms of silence that means a dead link on transports with visible heartbeats (default 40000). */
  heartbeatTimeout?: number;
  /** Long-poll hold in seconds asked of the server (default 30). */
  longpollTimeout?: number;
  /** Reconnect backoff bounds in ms (defaults 500 and 30000); full jitter. */
  backoffBase?: number;
  backoffMax?: number;
  /** Least ms before an SSE reconnect (default 2000, the server's default `retry:`). */
  sseRetry?: number;
  /** ms publish() waits for the server's ack (default 10000). */
  publishTimeout?: number;
  /** One connection shared by the tabs of this origin (default true). */
  shared?: boolean;
  /** Names the stored cursor and the shared channel (default "default"). */
  name?: string;
}

export interface Connection {
  /** Calls `onMessage` for each message on a topic matching `topicOrPattern`; returns the unsubscribe. */
  subscribe(topicOrPattern: string, onMessage: (message: Message) => void): () => void;
  /** Strings are published as text, anything else as JSON. */
  publish(topic: string, data: unknown, options?: { event?: string }): Promise<PublishAck>;
  on(event: 'state', fn: (state: State) => void): () => void;
  on(event: 'gap', fn: (gap: Gap) => void): () => void;
  on(event: 'error', fn: (error: HalleyError) => void): () => void;
  close(): void;
  readonly state: State;
  /** The id of the last message delivered (kept in sessionStorage). */
  readonly cursor: string | null;
  /** The transport in use, or null between connections (and in a tab that follows a leader). */
  readonly transport: TransportName | null;
  /** True while this tab holds the shared connection for its origin. */
  readonly leader: boolean;
}

/** Connects to `url` (default: the page's origin). */
export declare function connect(url?: string, options?: Options): Connection;
export declare function connect(options: Options): Connection;
export declare const TRANSPORTS: readonly TransportName[];
export declare const version: string;

export interface HalleyStatic {
  connect: typeof connect;
  TRANSPORTS: typeof TRANSPORTS;
  version: string;
}

declare const Halley: HalleyStatic;
export default Halley;

declare global {
  // The plain-script form defines this global.
  var Halley: HalleyStatic;
}
