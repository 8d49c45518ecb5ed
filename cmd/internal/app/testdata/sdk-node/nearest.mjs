// The official openai Node SDK, unmodified but for its base URL, asks
// questions edgecache answers from the semantic-nearest rung during an
// upstream outage. TestSDKNearestRungDisclosesTheMatchedQuestion
// (../../nearest_test.go) sets up the outage, runs this script and checks
// what it prints: what the SDK shows an application, non-streamed and
// streamed, which must say which earlier question the answer belongs to.
//
// Environment:
//   EDGECACHE_BASE_URL  edgecache's OpenAI base URL (required)
//   EDGECACHE_QUERIES   a JSON object, name → question (required)
//
// Prints one JSON object, name → [non-streamed text, streamed text], and
// exits 1 on any error.

import OpenAI from 'openai';

const baseURL = process.env.EDGECACHE_BASE_URL;
const queries = JSON.parse(process.env.EDGECACHE_QUERIES ?? 'null');
if (!baseURL || !queries) {
  console.error('EDGECACHE_BASE_URL and EDGECACHE_QUERIES must be set');
  process.exit(2);
}
// The application's own client: only the base URL points at edgecache.
const client = new OpenAI({ baseURL, apiKey: 'sk-edgecache-sdk-test' });
const body = (q) => ({
  model: 'gpt-4o-mini',
  messages: [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: q },
  ],
});

const out = {};
try {
  for (const [name, q] of Object.entries(queries)) {
    const completion = await client.chat.completions.create(body(q));
    let streamed = '';
    for await (const chunk of await client.chat.completions.create({ ...body(q), stream: true })) {
      for (const c of chunk.choices ?? []) streamed += c.delta?.content ?? '';
    }
    out[name] = [completion.choices?.[0]?.message?.content ?? '', streamed];
  }
} catch (err) {
  console.error(err?.stack ?? err);
  process.exit(1);
}
console.log(JSON.stringify(out));
