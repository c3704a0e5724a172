// src/http/undici.ts: mxs loads undici's dispatchers and request API by their paths in the package,
// not undici's index (which loads fetch, WebSocket, caches and mocks too: 60 ms more per network
// command on Node 24). These tests pin that those paths still are what the index exports (undici is
// pinned exactly, and a version bump that moved them fails here), that the index stays unloaded,
// and that request() splits URLs as undici's own request() does.
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { request, undiciCore } from '../../src/http/undici.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('undici without its index', () => {
  it('Agent and Pool are the classes undici exports, and every dispatcher has request()', () => {
    const undici = createRequire(import.meta.url)('undici') as typeof import('undici');
    const core = undiciCore();
    expect(core.Agent).toBe(undici.Agent);
    expect(core.Pool).toBe(undici.Pool);
    expect(typeof new core.Agent().request).toBe('function');
  });

  it('in a fresh process, undiciCore() loads neither undici’s index nor its fetch', async () => {
    const { default: ts } = await import('typescript');
    mkdirSync(join(REPO, '.cache'), { recursive: true });
    const dir = mkdtempSync(join(REPO, '.cache', 'undici-test-'));
    try {
      const source = join(REPO, 'src', 'http', 'undici.ts');
      const { outputText } = ts.transpileModule(readFileSync(source, 'utf8'), {
        compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 },
        fileName: source,
      });
      writeFileSync(join(dir, 'undici.mjs'), outputText);
      const probe = `
        import { createRequire } from 'node:module';
        import { undiciCore } from './undici.mjs';
        const core = undiciCore();
        const loaded = Object.keys(createRequire(import.meta.url).cache);
        console.log(JSON.stringify({
          agent: typeof core.Agent, pool: typeof core.Pool,
          index: loaded.some((f) => f.endsWith('/node_modules/undici/index.js')),
          fetch: loaded.some((f) => f.includes('/node_modules/undici/lib/web/')),
          files: loaded.filter((f) => f.includes('/node_modules/undici/')).length,
        }));`;
      writeFileSync(join(dir, 'probe.mjs'), probe);
      const r = spawnSync(process.execPath, [join(dir, 'probe.mjs')], { encoding: 'utf8' });
      expect(r.stderr).toBe('');
      const seen = JSON.parse(r.stdout) as Record<string, unknown>;
      expect(seen).toMatchObject({ agent: 'function', pool: 'function', index: false, fetch: false });
      expect(seen.files).toBeGreaterThan(10);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  describe('request()', () => {
    let server: http.Server;
    let base: string;
    const seen: Array<{ method: string; url: string; body: string }> = [];
    beforeAll(async () => {
      server = http.createServer((req, res) => {
        let body = '';
        req.on('data', (d) => (body += d));
        req.on('end', () => {
          seen.push({ method: req.method!, url: req.url!, body });
          res.setHeader('content-type', 'application/json');
          res.end('{"ok":true}');
        });
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    });
    afterAll(async () => {
      await new Promise((r) => server.close(r));
    });

    it('sends the path and query of the URL to its origin, with the method and body given', async () => {
      const agent = new (undiciCore().Agent)();
      try {
        const res = await request(agent, `${base}/_matrix/client/v3/rooms/%21a%3Ab/messages?dir=b&limit=1`, { method: 'GET' });
        expect(res.statusCode).toBe(200);
        expect(await res.body.json()).toEqual({ ok: true });
        const post = await request(agent, `${base}/x`, { method: 'POST', body: '{"a":1}', headers: { 'content-type': 'application/json' } });
        await post.body.dump();
      } finally {
        await agent.close();
      }
      expect(seen).toEqual([
        { method: 'GET', url: '/_matrix/client/v3/rooms/%21a%3Ab/messages?dir=b&limit=1', body: '' },
        { method: 'POST', url: '/x', body: '{"a":1}' },
      ]);
    });
  });
});
