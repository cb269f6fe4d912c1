// A stand-in for `vitest` in test bundles that run where only Node exists (the GPU machine):
// describe/it/hooks come from node:test, `expect` is vitest's own matcher library.

import * as nodeTest from 'node:test';
import {
  chai,
  JestAsymmetricMatchers,
  JestChaiExpect,
  JestExtend,
  ObjectContaining,
} from '@vitest/expect';

chai.use(JestExtend);
chai.use(JestChaiExpect);
chai.use(JestAsymmetricMatchers);

export const expect = (value, message) => chai.expect(value, message);
expect.objectContaining = (sample) => new ObjectContaining(sample);

const wrap = (fn) => (name, body, timeout) =>
  fn(name, typeof timeout === 'number' ? { timeout } : {}, body);
export const describe = nodeTest.describe;
export const it = wrap(nodeTest.it);
export const test = it;
export const beforeAll = nodeTest.before;
export const afterAll = nodeTest.after;
export const beforeEach = nodeTest.beforeEach;
export const afterEach = nodeTest.afterEach;
