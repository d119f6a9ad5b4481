// The ES-module entry: halley.js defines globalThis.Halley (it is also a plain script), and
// this file re-exports it. All the logic lives in halley.js.
import './halley.js';

const Halley = globalThis.Halley;

export default Halley;
export const connect = Halley.connect;
export const TRANSPORTS = Halley.TRANSPORTS;
export const version = Halley.version;
