// Opens a recording with @mcap/core's indexed reader (summary, chunk indexes, CRCs checked)
// and prints what it read as one JSON object: {messages, topics: {topic: count}}. Exits 1
// with the reader's error when the file cannot be opened that way (a killed recording before
// `ads-record --recover`).
//
//   node mcap_check.js FILE
//
// Run with NODE_PATH set to scripts/node-env.sh's node_modules.
"use strict";

const { McapIndexedReader } = require("@mcap/core");
const { decompress } = require("fzstd");
const fs = require("node:fs/promises");

async function main(path) {
  const handle = await fs.open(path, "r");
  const size = BigInt((await handle.stat()).size);
  const readable = {
    size: async () => size,
    read: async (offset, length) => {
      const buffer = new Uint8Array(Number(length));
      await handle.read(buffer, 0, Number(length), Number(offset));
      return buffer;
    },
  };
  const reader = await McapIndexedReader.Initialize({
    readable,
    decompressHandlers: { zstd: (data) => decompress(data) },
  });
  const out = { messages: 0, topics: {} };
  for await (const message of reader.readMessages({ validateCrcs: true })) {
    const topic = reader.channelsById.get(message.channelId).topic;
    out.topics[topic] = (out.topics[topic] || 0) + 1;
    out.messages += 1;
  }
  await handle.close();
  console.log(JSON.stringify(out));
}

main(process.argv[2]).catch((e) => {
  console.error(`@mcap/core McapIndexedReader: ${e && e.message}`);
  process.exit(1);
});
