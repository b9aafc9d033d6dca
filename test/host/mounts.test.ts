// Where the vtep namespace is mounted (docs/plumbing.md "The vtep namespace's mount"), decided from
// mountinfo lines as the kernel writes them (proc(5)).
import { describe, expect, it } from 'vitest';
import { mountAt, parseMountinfo, planNetnsMounts } from '../../src/host/mounts.js';

const HOST = parseMountinfo(
  [
    '26 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw',
    '30 26 0:27 / /run rw,nosuid shared:5 - tmpfs tmpfs rw',
    '44 30 0:27 /netns /run/netns rw,nosuid shared:9 - tmpfs tmpfs rw',
    '51 44 0:4 net:[4026532301] /run/netns/veil-vtep rw shared:9 - nsfs nsfs rw',
  ].join('\n'),
);
/** The same under `ip netns exec` (ip-netns(8): the whole tree made a slave of the host's). */
const EXEC = parseMountinfo(
  [
    '600 590 254:0 / / rw,relatime master:1 - ext4 /dev/vda rw',
    '601 600 0:27 / /run rw,nosuid master:5 - tmpfs tmpfs rw',
    '602 601 0:27 /netns /run/netns rw,nosuid master:9 - tmpfs tmpfs rw',
  ].join('\n'),
);

describe('mountinfo', () => {
  it('parses the propagation tags and unescapes mount points', () => {
    const [a, b, c] = parseMountinfo(
      [
        '44 30 0:27 /netns /run/netns rw shared:9 master:3 - tmpfs tmpfs rw',
        '45 30 0:27 / /mnt/with\\040space rw - tmpfs tmpfs rw',
        '46 30 0:27 / /mnt/x rw unbindable - tmpfs tmpfs rw',
        'garbage',
      ].join('\n'),
    );
    expect(a).toEqual({ id: 44, mountPoint: '/run/netns', shared: 9, master: 3 });
    expect(b).toEqual({ id: 45, mountPoint: '/mnt/with space' });
    expect(c).toEqual({ id: 46, mountPoint: '/mnt/x' });
  });

  it('finds the mount a path lies on: the deepest mount point above it, the top one when stacked', () => {
    expect(mountAt(HOST, '/run/netns')?.id).toBe(44);
    expect(mountAt(HOST, '/run/netnsx')?.id).toBe(30);
    expect(mountAt(HOST, '/etc')?.id).toBe(26);
    const stacked = parseMountinfo(
      [
        '44 30 0:27 /netns /run/netns rw - tmpfs tmpfs rw',
        '70 44 0:27 /netns /run/netns rw shared:4 - tmpfs t rw',
      ].join('\n'),
    );
    expect(mountAt(stacked, '/run/netns/x')?.id).toBe(70);
  });
});

describe('planNetnsMounts', () => {
  it("a host's own mount namespace (/run/netns shared, or not a mount point yet): mount it here", () => {
    expect(planNetnsMounts(HOST, [])).toEqual({ kind: 'own' });
    const fresh = parseMountinfo('26 1 254:0 / / rw,relatime - ext4 /dev/vda rw');
    expect(planNetnsMounts(fresh, [])).toEqual({ kind: 'own' });
  });

  it('under `ip netns exec`: in the mount namespace whose shared /run/netns is the master of ours, pid 1 first', () => {
    const plan = planNetnsMounts(EXEC, [
      { pid: 4000, mounts: HOST },
      { pid: 1, mounts: HOST },
      // Another slave of the same group: a mount there would not come back either.
      { pid: 300, mounts: EXEC },
      // A peer group of its own.
      { pid: 20, mounts: parseMountinfo('44 30 0:27 /netns /run/netns rw shared:77 - tmpfs tmpfs rw') },
    ]);
    expect(plan).toEqual({ kind: 'enter', pids: [1, 4000] });
  });

  it('a slave whose master no visible process holds (a container with /run/netns rslave): refused, naming the mount', () => {
    const plan = planNetnsMounts(EXEC, [{ pid: 300, mounts: EXEC }]);
    expect(plan.kind).toBe('refuse');
    expect(plan.kind === 'refuse' && plan.reason).toMatch(
      /\/run\/netns lies on mount \/run\/netns \(master:9\) .*peer group 9 .*-v \/run\/netns:\/run\/netns:rshared/,
    );
  });

  it('a private /run/netns mount (a container volume without rshared): refused, naming the mount', () => {
    const container = parseMountinfo(
      ['300 200 0:50 / / rw - overlay overlay rw', '310 300 0:27 /netns /run/netns rw - tmpfs tmpfs rw'].join('\n'),
    );
    const plan = planNetnsMounts(container, [{ pid: 1, mounts: HOST }]);
    expect(plan.kind).toBe('refuse');
    expect(plan.kind === 'refuse' && plan.reason).toMatch(/\/run\/netns is a private mount .*rshared/);
  });

  it("a container with /run/netns rshared is in the host's peer group: mount it here, the host sees it", () => {
    const container = parseMountinfo(
      ['300 200 0:50 / / rw - overlay overlay rw', '310 300 0:27 /netns /run/netns rw shared:9 - tmpfs tmpfs rw'].join(
        '\n',
      ),
    );
    expect(planNetnsMounts(container, [])).toEqual({ kind: 'own' });
  });
});
