// The viewer's Foxglove WebSocket server as the ecosystem's own tools see it: the official
// client (@foxglove/ws-protocol), every message of every channel validated with ajv against
// the official schemas (@foxglove/schemas) or, for ads.* channels, the advertised one.
// Prints one JSON object for viewer/tests/foxglove.rs to judge.
//
//   node foxglove_check.js validate ws://HOST:PORT/ SECONDS MIN_PER_TOPIC [OPTIONAL_TOPIC,...]
//   node foxglove_check.js status ws://HOST:PORT/
//
// Run with NODE_PATH set to scripts/node-env.sh's node_modules.
"use strict";

const { FoxgloveClient } = require("@foxglove/ws-protocol");
const { WebSocket } = require("ws");
const schemas = require("@foxglove/schemas/jsonschema");
const Ajv = require("ajv");
const util = require("node:util");

const [mode, url, ...rest] = process.argv.slice(2);

function connect(protocols = [FoxgloveClient.SUPPORTED_SUBPROTOCOL]) {
  return new FoxgloveClient({ ws: new WebSocket(url, protocols) });
}

// The official schema of a foxglove.* schema name, or undefined.
function official(name) {
  return name.startsWith("foxglove.") ? schemas[name.slice("foxglove.".length)] : undefined;
}

// Width and height of a JPEG from its SOF marker.
function jpegSize(bytes) {
  let i = 2;
  while (i + 9 < bytes.length) {
    if (bytes[i] !== 0xff) return undefined;
    const marker = bytes[i + 1];
    const length = (bytes[i + 2] << 8) | bytes[i + 3];
    if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
      return { height: (bytes[i + 5] << 8) | bytes[i + 6], width: (bytes[i + 7] << 8) | bytes[i + 8] };
    }
    i += 2 + length;
  }
  return undefined;
}

function stampKey(t) {
  return t ? `${t.sec}.${t.nsec}` : undefined;
}

function validate(seconds, minPerTopic, optional) {
  const ajv = new Ajv({ strict: false, allErrors: false });
  const client = connect();
  const out = { counts: {}, invalid: {}, errors: [], schema_mismatches: [], channels: {}, images: 0, annotations: { checked: 0, outside: 0, unpaired: 0, examples: [] } };
  const byId = new Map();
  const bySubscription = new Map();
  // Image sizes by capture stamp, annotations waiting for their image.
  const imageSizes = new Map();
  const pending = [];
  let done = false;

  function checkAnnotation(message) {
    const key = stampKey(message.timestamp);
    const size = imageSizes.get(key);
    if (!size) return false;
    out.annotations.checked += 1;
    const points = message.points.flatMap((p) => p.points).concat(message.texts.map((t) => t.position));
    const outside = points.filter((p) => !(p.x >= 0 && p.y >= 0 && p.x <= size.width && p.y <= size.height));
    if (outside.length > 0) {
      out.annotations.outside += 1;
      if (out.annotations.examples.length < 3) out.annotations.examples.push({ size, point: outside[0] });
    }
    return true;
  }

  function finish() {
    if (done) return;
    done = true;
    out.annotations.unpaired = pending.length;
    console.log(JSON.stringify(out));
    client.close();
    process.exit(0);
  }

  client.on("error", (e) => {
    out.errors.push(`client error: ${e && e.message}`);
    finish();
  });
  client.on("close", () => {
    out.errors.push("closed by the server");
    finish();
  });
  client.on("status", (s) => out.errors.push(`status: ${JSON.stringify(s)}`));
  client.on("advertise", (channels) => {
    for (const c of channels) {
      const advertised = JSON.parse(c.schema);
      const reference = official(c.schemaName);
      if (reference !== undefined && !util.isDeepStrictEqual(advertised, reference)) {
        out.schema_mismatches.push(c.topic);
      }
      out.channels[c.topic] = c.schemaName;
      out.counts[c.topic] = 0;
      out.invalid[c.topic] = 0;
      byId.set(c.id, { ...c, check: ajv.compile(reference ?? advertised) });
      bySubscription.set(client.subscribe(c.id), byId.get(c.id));
    }
  });
  client.on("message", ({ subscriptionId, data }) => {
    const channel = bySubscription.get(subscriptionId);
    if (!channel) {
      out.errors.push(`message for unknown subscription ${subscriptionId}`);
      return;
    }
    const text = new TextDecoder().decode(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    const message = JSON.parse(text);
    out.counts[channel.topic] += 1;
    if (!channel.check(message)) {
      out.invalid[channel.topic] += 1;
      if (out.errors.length < 10) {
        out.errors.push(`${channel.topic} (${channel.schemaName}): ${ajv.errorsText(channel.check.errors)}`);
      }
    }
    if (channel.schemaName === "foxglove.CompressedImage") {
      const size = jpegSize(Buffer.from(message.data, "base64"));
      if (size) {
        out.images += 1;
        imageSizes.set(stampKey(message.timestamp), size);
        for (let i = pending.length - 1; i >= 0; i--) {
          if (checkAnnotation(pending[i])) pending.splice(i, 1);
        }
      }
    } else if (channel.schemaName === "foxglove.ImageAnnotations" && message.timestamp) {
      if (!checkAnnotation(message)) pending.push(message);
    }
    const enough =
      Object.entries(out.counts).every(([topic, n]) => n >= minPerTopic || optional.includes(topic)) &&
      out.annotations.checked >= minPerTopic / 2;
    if (enough) finish();
  });
  setTimeout(finish, seconds * 1000);
}

// The server's answers to requests the spec wants a status for, and to a client that offers
// only another subprotocol.
function status() {
  const out = { statuses: [], errors: [], other_subprotocol: null };
  const client = connect();
  const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  client.on("status", (s) => out.statuses.push(s));
  client.on("error", (e) => out.errors.push(`client error: ${e && e.message}`));
  client.on("advertise", async (channels) => {
    const id = channels[0].id;
    const unknown = Math.max(...channels.map((c) => c.id)) + 100;
    const step = async (what, act) => {
      const before = out.statuses.length;
      act();
      for (let i = 0; i < 50 && out.statuses.length === before; i++) await wait(100);
      out[what] = out.statuses.slice(before);
    };
    await step("unknown_channel", () => client.subscribe(unknown));
    await step("second_subscription", () => {
      client.subscribe(id);
      client.subscribe(id);
    });
    await step("unsupported_operation", () => client.getParameters(["speed"], "q1"));
    client.close();
    const other = new WebSocket(url, ["other.protocol.v1"]);
    const settle = (result) => {
      out.other_subprotocol = result;
      other.terminate();
      console.log(JSON.stringify(out));
      process.exit(0);
    };
    other.on("unexpected-response", (_req, res) => settle({ refused: true, status: res.statusCode }));
    other.on("open", () => settle({ refused: false, status: 101, protocol: other.protocol }));
    other.on("error", (e) => settle({ refused: false, error: e.message }));
  });
  setTimeout(() => {
    out.errors.push("timed out");
    console.log(JSON.stringify(out));
    process.exit(0);
  }, 60000);
}

if (mode === "validate") {
  validate(Number(rest[0]), Number(rest[1]), (rest[2] || "").split(","));
} else if (mode === "status") {
  status();
} else {
  console.error("usage: foxglove_check.js validate URL SECONDS MIN_PER_TOPIC | status URL");
  process.exit(2);
}
