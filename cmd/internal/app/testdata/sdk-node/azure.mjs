// The official openai Node SDK's AzureOpenAI client, unmodified but for its
// endpoint, against edgecache serving Azure's
// /openai/deployments/{deployment}/chat/completions layout in front of
// llmsim. TestNodeSDKAzure (../../azure_test.go) starts both and runs this.
//
// Environment: EDGECACHE_ENDPOINT, edgecache's base URL without a path
// (required). Prints "ok NAME" or "FAIL NAME: why" per check, and exits 1
// if any check failed.

import { createHash, randomUUID } from 'node:crypto';
import { AzureOpenAI } from 'openai';

const endpoint = process.env.EDGECACHE_ENDPOINT;
if (!endpoint) {
  console.log('FAIL setup: EDGECACHE_ENDPOINT is not set');
  process.exit(2);
}
const client = new AzureOpenAI({ endpoint, apiKey: 'azure-node-key', apiVersion: '2024-10-21' });
const DEPLOYMENT = 'gpt-4o-node';
const run = randomUUID();
const marker = (text) => 'sim:' + createHash('sha256').update(text).digest('hex').slice(0, 12);

class CheckError extends Error {}
function expect(cond, msg) {
  if (!cond) throw new CheckError(msg);
}

const p = `Name a lake (azure node sdk run ${run})`;
const body = { model: DEPLOYMENT, messages: [{ role: 'user', content: p }] };
let missText = '';
const checks = [
  ['miss', async () => {
    const { data, response } = await client.chat.completions.create(body).withResponse();
    const cs = response.headers.get('cache-status') ?? '';
    expect(cs.startsWith('edgecache; fwd=uri-miss') && cs.includes('stored'), `cache-status ${JSON.stringify(cs)}, want a stored miss`);
    expect(new URL(response.url).pathname === `/openai/deployments/${DEPLOYMENT}/chat/completions`, `the client called ${response.url}`);
    missText = data.choices?.[0]?.message?.content ?? '';
    expect(missText.startsWith(marker(p) + ' '), `answer ${JSON.stringify(missText)} does not start with ${marker(p)}`);
  }],
  ['hit', async () => {
    const { data, response } = await client.chat.completions.create(body).withResponse();
    const cs = response.headers.get('cache-status') ?? '';
    expect(cs.startsWith('edgecache; hit; detail=l1'), `cache-status ${JSON.stringify(cs)}, want an L1 hit`);
    expect(data.choices?.[0]?.message?.content === missText, `hit ${JSON.stringify(data.choices?.[0]?.message?.content)}, miss ${JSON.stringify(missText)}`);
  }],
  ['streamed hit', async () => {
    const stream = await client.chat.completions.create({ ...body, stream: true });
    let text = '';
    let finish = null;
    for await (const chunk of stream) {
      for (const c of chunk.choices ?? []) {
        text += c.delta?.content ?? '';
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
    expect(text === missText && finish === 'stop', `streamed ${JSON.stringify(text)} (finish ${finish}), want ${JSON.stringify(missText)}`);
  }],
];

let failed = 0;
for (const [name, fn] of checks) {
  try {
    await fn();
    console.log(`ok ${name}`);
  } catch (err) {
    failed++;
    console.log(`FAIL ${name}: ${err instanceof CheckError ? err.message : err}`);
  }
}
if (failed > 0) process.exit(1);
console.log(`all ${checks.length} checks passed`);
