import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PausableElection, type StartableElection } from '../../src/daemon/pausable-election.ts';

/** Elections that record what happened to them; each leads as soon as it starts. */
function factory() {
  const made: { started: boolean; stopped: boolean }[] = [];
  const make = (): StartableElection => {
    const state = { started: false, stopped: false };
    made.push(state);
    return {
      start: () => void (state.started = true),
      stop: async () => void (state.stopped = true),
      isLeader: () => state.started && !state.stopped,
      leader: () => (state.started && !state.stopped ? 'me' : undefined),
    };
  };
  return { made, make };
}

test('a pause leaves the election (the client is closed) and a resume joins with a new one', async () => {
  const { made, make } = factory();
  const election = new PausableElection(make);
  election.start();
  assert.equal(election.isLeader(), true);
  await election.pause();
  assert.deepEqual(made, [{ started: true, stopped: true }]);
  assert.equal(election.isLeader(), false);
  assert.equal(election.leader(), undefined);
  election.resume();
  assert.equal(made.length, 2, 'a new election, not the closed one');
  assert.equal(election.isLeader(), true);
});

test('nested pauses need as many resumes; after stop nothing starts again', async () => {
  const { made, make } = factory();
  const election = new PausableElection(make);
  await election.pause(); // before start: start waits for the resume
  election.start();
  assert.equal(made.length, 0);
  election.resume();
  assert.equal(made.length, 1);
  await election.pause();
  await election.pause();
  election.resume();
  assert.equal(made.length, 1, 'still paused once');
  election.resume();
  assert.equal(made.length, 2);
  await election.pause();
  await election.stop();
  election.resume();
  assert.equal(made.length, 2, 'a resume after stop starts nothing');
  assert.ok(made.every((m) => m.stopped));
});
