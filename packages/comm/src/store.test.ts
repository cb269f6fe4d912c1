import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError, TimeoutError } from '@x/core';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from './launch.js';
import { Store, StoreServer } from './store.js';

const text = (b: Uint8Array) => Buffer.from(b).toString();

async function tcpStore(): Promise<{ server: StoreServer; a: Store; b: Store }> {
  const server = StoreServer.listen('127.0.0.1', 0);
  const a = await Store.connect('127.0.0.1', server.port, { timeoutMs: 2000 });
  const b = await Store.connect('127.0.0.1', server.port, { timeoutMs: 2000 });
  return { server, a, b };
}

const servers: StoreServer[] = [];
afterAll(() => {
  for (const s of servers) s.close();
});

describe.each(['tcp', 'file'])('%s store', (kind) => {
  async function open(): Promise<[Store, Store]> {
    if (kind === 'tcp') {
      const { server, a, b } = await tcpStore();
      servers.push(server);
      return [a, b];
    }
    const dir = mkdtempSync(join(tmpdir(), 'x-comm-store-'));
    return [Store.openFile(dir, { timeoutMs: 2000 }), Store.openFile(dir, { timeoutMs: 2000 })];
  }

  it('sets, gets (waiting for the key), adds, compare-sets and deletes', async () => {
    const [a, b] = await open();
    const pending = b.getString('late');
    await new Promise((r) => setTimeout(r, 50));
    await a.set('late', 'value');
    expect(await pending).toBe('value');
    expect(await a.add('n', 2)).toBe(2);
    expect(await b.add('n', 5)).toBe(7);
    expect(text(await a.compareSet('c', '', 'one'))).toBe('one');
    expect(text(await b.compareSet('c', 'wrong', 'two'))).toBe('one');
    expect(text(await b.compareSet('c', 'one', 'two'))).toBe('two');
    expect(await a.delete('c')).toBe(true);
    expect(await a.delete('c')).toBe(false);
    await a.set('k1', new Uint8Array([0, 255]));
    await b.set('k2', 'x');
    await a.wait(['k1', 'k2']);
    expect(Array.from(await b.get('k1'))).toEqual([0, 255]);
  });

  it('keeps prefixed namespaces apart', async () => {
    const [a, b] = await open();
    await a.prefixed('job1').set('k', '1');
    await b.prefixed('job2').set('k', '2');
    expect(await a.prefixed('job2').getString('k')).toBe('2');
    expect(await b.prefixed('job1').getString('k')).toBe('1');
  });

  it('times out a get or wait on a key that never appears', async () => {
    const [a] = await open();
    const t0 = Date.now();
    const err = await a.get('never', { timeoutMs: 200 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TimeoutError);
    expect((err as TimeoutError).timeoutMs).toBe(200);
    expect((err as Error).message).toMatch(/get\('never'\) timed out after 200 ms/);
    expect(Date.now() - t0).toBeLessThan(1500);
    await a.set('present', '1');
    await expect(a.wait(['present', 'absent'], { timeoutMs: 150 })).rejects.toBeInstanceOf(
      TimeoutError,
    );
  });
});

describe('Store errors', () => {
  it('times out connecting to a store nobody serves', async () => {
    const port = await freePort();
    const err = await Store.connect('127.0.0.1', port, { timeoutMs: 300 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TimeoutError);
    expect((err as Error).message).toMatch(/connection refused/i);
  });

  it('serves clients that connect before the server starts listening', async () => {
    const port = await freePort();
    const pending = Store.connect('127.0.0.1', port, { timeoutMs: 3000 });
    await new Promise((r) => setTimeout(r, 200));
    const server = StoreServer.listen('127.0.0.1', port);
    servers.push(server);
    const s = await pending;
    await s.set('a', 'b');
    expect(await s.getString('a')).toBe('b');
  });

  it('rejects bad arguments with InvalidArgumentError', async () => {
    const { server, a } = await tcpStore();
    servers.push(server);
    await expect(a.set('', 'x')).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(a.add('k', 1.5)).rejects.toThrow(/Expected a safe integer for delta/);
    await expect(a.get('k', { timeoutMs: -1 })).rejects.toThrow(/for timeoutMs/);
    expect(() => StoreServer.listen('127.0.0.1', 70000)).toThrow(InvalidArgumentError);
  });
});
