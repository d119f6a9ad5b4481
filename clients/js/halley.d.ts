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

export interface PublishAck {
  id: string;
  topic: string;
  time?: number;
  /** Subscribers on the receiving node that got it. */
  delivered: number;
}

export interface Options {
  /** Carried as `access_token` (WebSocket, SSE, JSONP, iframe) or `Authorization: Bearer` (fetch). */
  token?: string | null;
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
  on(event: 'error', fn: (error: Error) => void): () => void;
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
