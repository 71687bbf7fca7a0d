// Evaluation without a model: the benchmark JSONL, scoring per answer type, and the judge client
// against a local HTTP server (answers, a server that never answers, a port nobody listens on).
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { isVisplayError } from '../../src/errors.js';
import type { Model } from '../../src/model.js';
import {
  askJudge, benchQuestion, evaluate, judgeEndpoint, loadBench, optionIndex, parseBench, parseVerdict, scoreAnswer, summarise, yesNo,
  type BenchItem,
} from '../../src/visplay/eval.js';

const tmp = mkdtempSync(join(tmpdir(), 'visplay-eval-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const lines = (...values: unknown[]) => values.map((v) => (typeof v === 'string' ? v : JSON.stringify(v))).join('\n');

describe('benchmark JSONL', () => {
  it('parses good lines, resolves image paths against the file\'s folder and infers types', () => {
    const bench = parseBench(lines(
      { image: 'a.png', question: 'Which?', options: ['red', 'green', 'blue'], answer: 'B', id: 7 },
      { image: '/abs/b.png', question: 'Is it a cat?', answer: 'Yes' },
      { image: 'sub/c.png', question: 'How many?', answer: 3 },
      { image: 'd.png', question: 'What colour?', answer: 'green' },
      { image: 'e.png', question: 'Describe it.', answer: 'a cat on a mat', type: 'free-form' },
      { image: 'f.png', question: 'Pick.', options: ['red', 'green'], answer: 'green' },
      { image: 'g.png', question: 'How far?', answer: '12.5 km', type: 'numeric', tolerance: 0.1 },
    ), { baseDir: '/data/bench' });
    assert.deepEqual(bench.skipped, []);
    assert.deepEqual(bench.items.map((i) => [i.index, i.line, i.type]), [
      [0, 1, 'multiple choice'], [1, 2, 'yes/no'], [2, 3, 'numeric'], [3, 4, 'short'], [4, 5, 'free-form'], [5, 6, 'multiple choice'], [6, 7, 'numeric'],
    ]);
    assert.equal(bench.items[0]!.image, '/data/bench/a.png');
    assert.equal(bench.items[0]!.id, '7');
    assert.equal(bench.items[0]!.choice, 1);
    assert.equal(bench.items[1]!.image, '/abs/b.png');
    assert.equal(bench.items[2]!.image, '/data/bench/sub/c.png');
    assert.equal(bench.items[2]!.answer, '3');
    assert.equal(bench.items[5]!.choice, 1, 'an answer given as the option text');
    assert.equal(bench.items[6]!.tolerance, 0.1);
  });

  it('skips bad lines and reports them by line number', () => {
    const bench = parseBench(lines(
      { image: 'a.png', question: 'Q?', answer: 'x' },
      '{"image": "b.png", "question": ',
      '',
      '[1, 2]',
      { question: 'no image', answer: 'x' },
      { image: 'c.png', question: '', answer: 'x' },
      { image: 'c.png', question: 'Q?' },
      { image: 'c.png', question: 'Q?', answer: 'x', type: 'essay' },
      { image: 'c.png', question: 'Q?', options: ['a', 'b'], answer: 'E' },
      { image: 'c.png', question: 'Q?', answer: 'maybe', type: 'yes/no' },
      { image: 'c.png', question: 'Q?', answer: 'many', type: 'numeric' },
      { image: 'c.png', question: 'Q?', options: ['only one'], answer: 'A' },
      { image: 'c.png', question: 'Q?', answer: '3', tolerance: -1 },
      { image: 'c.png', question: 'Q?', answer: 'x', options: ['a', 'b'], type: 'short' },
      { image: 'z.png', question: 'Last?', answer: 'no' },
    ), { baseDir: '/b' });
    assert.deepEqual(bench.items.map((i) => i.line), [1, 15]);
    assert.deepEqual(bench.skipped.map((p) => p.line), [2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
    const message = (line: number) => bench.skipped.find((p) => p.line === line)!.message;
    assert.equal(message(2), 'not valid JSON');
    assert.equal(message(4), 'expected a JSON object');
    assert.match(message(5), /needs "image"/);
    assert.match(message(6), /needs "question"/);
    assert.match(message(7), /needs "answer"/);
    assert.match(message(8), /"type" must be one of "multiple choice", "yes\/no", "numeric", "short", "free-form"/);
    assert.match(message(9), /"answer" "E" names none of the options \(give a letter A-B/);
    assert.match(message(10), /yes or no/);
    assert.match(message(11), /must be a number/);
    assert.match(message(12), /2 to 26/);
    assert.match(message(13), /non-negative/);
    assert.match(message(14), /belong to multiple-choice items/);
  });

  it('refuses a file with no usable line, naming the lines', () => {
    assert.throws(() => parseBench(lines('nope', { image: 'a.png' }), { baseDir: '/', path: '/b/x.jsonl' }),
      (e: unknown) => isVisplayError(e, 'ERR_INVALID_ARG') && e.message.startsWith('benchmark /b/x.jsonl has no usable line: line 1: not valid JSON; line 2: needs "question"'));
    assert.throws(() => parseBench('\n\n', { baseDir: '/' }), (e: unknown) => isVisplayError(e, 'ERR_INVALID_ARG') && e.message.includes('it is empty'));
  });

  it('loads a file: images relative to it, missing or broken images skipped with their line', async () => {
    const dir = join(tmp, 'bench');
    mkdirSync(join(dir, 'img'), { recursive: true });
    await sharp({ create: { width: 32, height: 24, channels: 3, background: { r: 200, g: 10, b: 10 } } }).png().toFile(join(dir, 'img', 'red.png'));
    writeFileSync(join(dir, 'img', 'broken.png'), 'not an image');
    const file = join(dir, 'bench.jsonl');
    writeFileSync(file, lines(
      { image: 'img/red.png', question: 'What colour?', answer: 'red' },
      { image: 'img/missing.png', question: 'What colour?', answer: 'red' },
      { image: 'img/broken.png', question: 'What colour?', answer: 'red' },
      { image: join(dir, 'img', 'red.png'), question: 'Is it red?', answer: 'yes' },
    ) + '\n');
    const bench = await loadBench(file);
    assert.equal(bench.path, file);
    assert.deepEqual(bench.items.map((i) => [i.index, i.line, i.image]), [[0, 1, join(dir, 'img', 'red.png')], [1, 4, join(dir, 'img', 'red.png')]]);
    assert.deepEqual(bench.skipped.map((p) => p.line), [2, 3]);
    assert.match(bench.skipped[0]!.message, /missing\.png does not exist/);
    assert.match(bench.skipped[1]!.message, /broken\.png does not decode/);
    await assert.rejects(loadBench(join(dir, 'nope.jsonl')), (e: unknown) => isVisplayError(e, 'ERR_FILE_NOT_FOUND') && e.message.includes('nope.jsonl'));
  });

  it('renders options under the question as A. ... B. ...', () => {
    assert.equal(benchQuestion({ question: 'Which colour?', options: ['red', 'green', 'blue'] }), 'Which colour?\nA. red\nB. green\nC. blue');
    assert.equal(benchQuestion({ question: 'How many?' }), 'How many?');
  });
});

describe('scoring', () => {
  const mc: Pick<BenchItem, 'type' | 'answer' | 'options' | 'choice'> = { type: 'multiple choice', answer: 'B', options: ['red', 'green', 'blue'], choice: 1 };

  it('multiple choice: by letter in any usual form, or by the option text', () => {
    for (const p of ['B', 'b', '(B)', 'B.', 'B)', 'B. green', 'green', 'Green']) assert.equal(scoreAnswer(mc, p), true, p);
    for (const p of ['A', 'C. blue', 'blue', '', 'purple', 'D']) assert.equal(scoreAnswer(mc, p), false, p);
    assert.equal(optionIndex('Option C', ['x', 'y', 'z']), 2);
    assert.equal(optionIndex('E', ['x', 'y']), null);
  });

  it('multiple choice with the options inside the question: letters compared', () => {
    const item = { type: 'multiple choice' as const, answer: 'C' };
    assert.equal(scoreAnswer(item, 'C'), true);
    assert.equal(scoreAnswer(item, '(c)'), true);
    assert.equal(scoreAnswer(item, 'C. The suitcase'), true);
    assert.equal(scoreAnswer(item, 'A'), false);
  });

  it('yes/no: the first word', () => {
    const item = { type: 'yes/no' as const, answer: 'Yes' };
    for (const p of ['yes', 'Yes.', 'YES, it is', 'true']) assert.equal(scoreAnswer(item, p), true, p);
    for (const p of ['no', 'No.', 'maybe', '']) assert.equal(scoreAnswer(item, p), false, p);
    assert.equal(yesNo('No, it is not'), 'no');
    assert.equal(yesNo('perhaps'), null);
  });

  it('numeric: equal numbers, within a relative tolerance when given', () => {
    assert.equal(scoreAnswer({ type: 'numeric', answer: '12' }, '12'), true);
    assert.equal(scoreAnswer({ type: 'numeric', answer: '12' }, '13'), false);
    assert.equal(scoreAnswer({ type: 'numeric', answer: '100', tolerance: 0.05 }, '104'), true);
    assert.equal(scoreAnswer({ type: 'numeric', answer: '100', tolerance: 0.05 }, '106'), false);
    assert.equal(scoreAnswer({ type: 'numeric', answer: '100' }, ''), false);
  });

  it('short: answer equivalence', () => {
    assert.equal(scoreAnswer({ type: 'short', answer: 'cat' }, 'cat'), true);
    assert.equal(scoreAnswer({ type: 'short', answer: 'cat' }, 'elephant'), false);
  });

  it('free-form is the judge\'s, never the rules\'', () => {
    assert.throws(() => scoreAnswer({ type: 'free-form', answer: 'x' }, 'x'), (e: unknown) => isVisplayError(e, 'ERR_INTERNAL'));
  });

  it('adds up per type and overall', () => {
    const s = summarise([
      { type: 'numeric', correct: true }, { type: 'numeric', correct: false }, { type: 'yes/no', correct: true }, { type: 'numeric', correct: true },
    ], { iteration: 2, bench: '/b.jsonl', adapter: '/r' });
    assert.deepEqual(s, {
      iteration: 2, bench: '/b.jsonl', adapter: '/r',
      overall: { accuracy: 0.75, correct: 3, total: 4 },
      byType: { numeric: { accuracy: 2 / 3, correct: 2, total: 3 }, 'yes/no': { accuracy: 1, correct: 1, total: 1 } },
    });
  });
});

describe('judge', () => {
  let server: Server;
  let base = '';
  const requests: Array<{ url: string; body: { model?: string; messages: Array<{ role: string; content: string }>; temperature: number } }> = [];
  let reply: (req: IncomingMessage, res: ServerResponse, body: string) => void = () => {};

  before(async () => {
    server = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => {
        requests.push({ url: req.url ?? '', body: JSON.parse(body || '{}') });
        reply(req, res, body);
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  const answer = (content: string, status = 200) => (_req: IncomingMessage, res: ServerResponse) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(status === 200 ? JSON.stringify({ choices: [{ index: 0, message: { role: 'assistant', content } }] }) : content);
  };
  const item = { question: 'What is shown?', reference: 'a red car', prediction: 'a crimson automobile' };

  it('builds the endpoint from a base URL or takes a full one', () => {
    assert.equal(judgeEndpoint('http://h:8080'), 'http://h:8080/v1/chat/completions');
    assert.equal(judgeEndpoint('http://h:8080/'), 'http://h:8080/v1/chat/completions');
    assert.equal(judgeEndpoint('http://h:8080/v1'), 'http://h:8080/v1/chat/completions');
    assert.equal(judgeEndpoint('https://api.example.com/openai/chat/completions'), 'https://api.example.com/openai/chat/completions');
    assert.throws(() => judgeEndpoint('localhost:8080'), (e: unknown) => isVisplayError(e, 'ERR_INVALID_ARG'));
    assert.throws(() => judgeEndpoint('not a url'), (e: unknown) => isVisplayError(e, 'ERR_INVALID_ARG') && e.message.includes('not a URL'));
  });

  it('asks with the question, reference and prediction, and reads yes', async () => {
    reply = answer('Yes.');
    requests.length = 0;
    const v = await askJudge({ url: base, model: 'glm-4-flash' }, item);
    assert.deepEqual(v, { match: true, clear: true, reply: 'Yes.' });
    assert.equal(requests[0]!.url, '/v1/chat/completions');
    assert.equal(requests[0]!.body.model, 'glm-4-flash');
    assert.equal(requests[0]!.body.temperature, 0);
    const user = requests[0]!.body.messages.at(-1)!.content;
    for (const text of [item.question, item.reference, item.prediction]) assert.ok(user.includes(text), text);
  });

  it('reads no, and an unclear reply as no match', async () => {
    reply = answer('no');
    assert.deepEqual(await askJudge({ url: base }, item), { match: false, clear: true, reply: 'no' });
    reply = answer('I cannot tell.');
    assert.deepEqual(await askJudge({ url: base }, item), { match: false, clear: false, reply: 'I cannot tell.' });
    assert.equal(parseVerdict('<think>the answer is no... wait</think>\nYes').match, true);
  });

  it('a server that never answers: a timeout naming the URL (ERR_JUDGE)', async () => {
    reply = () => {};  // hangs
    const started = performance.now();
    await assert.rejects(askJudge({ url: base, timeoutMs: 300 }, item), (e: unknown) => isVisplayError(e, 'ERR_JUDGE')
      && e.message === `the judge at ${base}/v1/chat/completions did not answer within 0.3 s (--judge-timeout)`);
    assert.ok(performance.now() - started < 5000);
  });

  it('an HTTP error: its status and body, after the retries', async () => {
    reply = answer('model overloaded', 503);
    requests.length = 0;
    await assert.rejects(askJudge({ url: base, retries: 1 }, item), (e: unknown) => isVisplayError(e, 'ERR_JUDGE')
      && e.message === `the judge at ${base}/v1/chat/completions answered HTTP 503: model overloaded`);
    assert.equal(requests.length, 2);
    reply = (_q, res) => { res.writeHead(200); res.end('<html>hello</html>'); };
    await assert.rejects(askJudge({ url: base }, item), (e: unknown) => isVisplayError(e, 'ERR_JUDGE') && e.message.includes('did not answer with a chat completion'));
  });

  it('a port nobody listens on: connection refused, naming the URL', async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    await assert.rejects(askJudge({ url: `http://127.0.0.1:${port}` }, item), (e: unknown) => isVisplayError(e, 'ERR_JUDGE')
      && e.message === `cannot reach the judge at http://127.0.0.1:${port}/v1/chat/completions: connection refused (ECONNREFUSED)`);
  });
});

describe('evaluate (before any decoding)', () => {
  const untouchable = new Proxy({}, { get: () => { throw new Error('the model must not be used'); } }) as Model;
  const bench = parseBench(lines(
    { image: 'a.png', question: 'Q?', answer: 'yes' },
    { image: 'b.png', question: 'Describe.', answer: 'a dog', type: 'free-form' },
  ), { baseDir: '/x', path: '/x/b.jsonl' });

  it('refuses free-form items without a judge', async () => {
    await assert.rejects(evaluate(untouchable, bench), (e: unknown) => isVisplayError(e, 'ERR_INVALID_ARG')
      && e.message.startsWith('1 free-form item (line 2) needs a judge: pass --judge URL'));
    // ... unless they are past --limit.
    await assert.rejects(evaluate(untouchable, bench, { limit: 1 }), /the model must not be used/);
  });

  it('checks its options first', async () => {
    await assert.rejects(evaluate(untouchable, bench, { judge: 'nope' }), (e: unknown) => isVisplayError(e, 'ERR_INVALID_ARG'));
    await assert.rejects(evaluate(untouchable, bench, { judge: 'http://h', limit: 0 }), (e: unknown) => isVisplayError(e, 'ERR_INVALID_ARG'));
    await assert.rejects(evaluate(untouchable, bench, { judge: 'http://h', lora: join(tmp, 'no-such-policy') }),
      (e: unknown) => isVisplayError(e, 'ERR_FILE_NOT_FOUND') && e.message.includes('no-such-policy'));
  });
});
