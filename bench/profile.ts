// bench/profile: where a packet's time goes on the encrypted path (docs/performance.md "Where a
// packet's time goes"). Two hosts of the namespace bed, an encrypted network, one iperf3 TCP stream
// through it; while it runs:
//   1. `perf record -a -g` (software clock: this VM has no hardware counters), grouped by who
//      (the gateways' data-path threads, their event loop, iperf3, softirq threads, idle) and by what
//      (AES-GCM, copies, checksums, UDP, VXLAN, veth, bridge, GRO/GSO, syscall entry, scheduler...);
//   2. `perf stat` of the gateways' system calls (tracepoints), against the frames they sealed and
//      opened in the same window: kernel crossings per frame;
//   3. the gateways' CPU per frame, from /proc.
// Root; perf (linux-perf) and iperf3 (scripts/bench-setup.sh).
//   VEIL_PROFILE_SECONDS (8): each window; VEIL_PROFILE_KEEP (unset): keep perf.data in this path
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createOverlayBed, type NetworkDef } from '../test/system/netns/overlay-bed.js';

const SECONDS = Number(process.env.VEIL_PROFILE_SECONDS ?? 8);
const ENC: NetworkDef = { id: 'enc', index: 1, vni: 4096, encrypted: true, subnet: '10.10.0' };

/** Who a sample belongs to, by the thread's name (comm) and whether it ran in the kernel. */
function who(comm: string, kernel: boolean): string {
  const side = kernel ? 'kernel' : 'user';
  if (comm === 'veil-out' || comm === 'veil-in') return `gateway ${comm} (${side})`;
  if (comm === 'swapper') return 'idle';
  if (comm.startsWith('iperf3')) return `iperf3 (${side})`;
  if (comm.startsWith('ksoftirqd')) return 'softirq threads';
  if (comm === 'node' || comm.startsWith('libuv') || comm.startsWith('V8')) return `gateway event loop (${side})`;
  return `other (${side})`;
}

/** What a symbol does, first match wins. */
const WHAT: Array<[string, RegExp]> = [
  ['idle', /halt|idle|mwait|cpuidle|poll_idle|acpi_|pvm_safe/],
  ['AES-GCM', /aes|gcm|ghash|gf128|clmul|ossl_|EVP_|CRYPTO_/i],
  ['OpenSSL parameter lookups', /OSSL_PARAM|strcmp|ossl_param/],
  ['copies', /copy_(to|from)_(iter|user)|memcpy|memmove|copy_user|rep_movs|__memcpy|copyout|copyin/],
  ['checksums', /csum/],
  ['GRO/GSO', /gro|gso|skb_segment|segment/],
  ['VXLAN', /vxlan/],
  ['veth', /veth/],
  ['bridge', /^br_|bridge|nf_hook|nft_/],
  ['UDP', /udp/],
  ['TCP', /tcp/],
  ['IP and routing', /^ip_|^__ip|fib_|dst_|rt_|^ipv4|inet_|neigh/],
  ['device queue, softirq', /netif|napi|net_rx|softirq|dev_queue|dev_hard|__dev_|sch_|qdisc|process_backlog/],
  ['sockets, skb life', /sock|skb|kmem|kmalloc|kfree|slab|alloc_pages|free_pages|page_frag|__alloc|consume/],
  ['syscall entry/exit', /entry_SYSCALL|syscall|do_syscall|__x64_sys|exit_to_user|__sys_/],
  ['scheduler, wake-ups', /schedule|wake|futex|switch|enqueue|dequeue|ttwu|pick_next|update_curr|epoll|poll|select/],
  ['locks', /lock|spin|mutex/],
];

function what(sym: string): string {
  for (const [name, re] of WHAT) if (re.test(sym)) return name;
  return 'other';
}

/** Kernel functions that mark a stage of the path; their inclusive share (callees included) per thread. */
const STAGES: Array<[string, string]> = [
  ['do_recvmmsg', 'recvmmsg: a batch read from a socket'],
  ['udp_recvmsg', '  the UDP socket read (copy out)'],
  ['tun_chr_read_iter', 'read from a TAP port: a frame or super-segment'],
  ['__sys_sendmmsg', 'sendmmsg: a batch sent, and what runs inside it'],
  ['tun_chr_write_iter', 'writev to a TAP port, and what runs inside it'],
  ['__udp_gso_segment', '  UDP GSO segmentation'],
  ['net_rx_action', '  softirq receive, run in the sending thread'],
  ['dev_gro_receive', '  GRO'],
  ['vxlan_rcv', '  kernel VXLAN decapsulation'],
  ['vxlan_xmit', '  kernel VXLAN encapsulation'],
  ['br_handle_frame', '  the bridge'],
  ['veth_xmit', '  veth'],
  ['tcp_v4_rcv', "  the container's TCP receive"],
];

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

function table(title: string, shares: Map<string, number>, total: number, limit = 40): void {
  console.log(`\n${title}`);
  for (const [k, v] of [...shares].sort((a, b) => b[1] - a[1]).slice(0, limit))
    console.log(`  ${((v / total) * 100).toFixed(1).padStart(5)} %  ${k}`);
}

const ob = await createOverlayBed({ hosts: 2, networks: [ENC] });
const perfData = process.env.VEIL_PROFILE_KEEP ?? join(ob.dir, 'perf.data');
try {
  const [c1, c2] = [await ob.container(1, ENC), await ob.container(2, ENC)];
  const pids = ob.gateways.map((g) => g.pid);
  const server = ob.bed.spawn(c2.ns, ['iperf3', '-s', '-1', '--forceflush', '-B', c2.ip]);
  await server.waitFor(/Server listening/, 10_000);
  const total = 2 * SECONDS + 6;
  const client = ob.bed.spawn(c1.ns, ['iperf3', '-c', c2.ip, '-t', String(total), '-J']);
  await new Promise((r) => setTimeout(r, 2_000)); // past slow start

  // 1. Samples, system-wide.
  execFileSync('perf', ['record', '-a', '-g', '-F', '499', '-o', perfData, '--', 'sleep', String(SECONDS)], {
    stdio: 'ignore',
  });

  // 2. System calls and frames in the next window; 3. CPU in the same one.
  const frames = async () => {
    let n = 0;
    for (const [h, p] of [
      [1, 2],
      [2, 1],
    ] as const) {
      const s = await ob.pair(h, p, ENC.vni);
      n += (s?.txPackets ?? 0) + (s?.rxPackets ?? 0);
    }
    return n;
  };
  // The calls a gateway makes (native/bind.c, dataplane.c; Node's event loop), not all ~300 tracepoints.
  const events = [
    'recvmmsg',
    'sendmmsg',
    'recvmsg',
    'sendmsg',
    'sendto',
    'recvfrom',
    'read',
    'write',
    'writev',
    'readv',
    'poll',
    'ppoll',
    'epoll_wait',
    'epoll_pwait',
    'futex',
    'ioctl',
    'getsockopt',
    'setsockopt',
    'mmap',
    'munmap',
    'madvise',
    'mprotect',
    'clock_nanosleep',
    'nanosleep',
    'sched_yield',
  ]
    .map((c) => `syscalls:sys_enter_${c}`)
    .join(',');
  const f0 = await frames();
  const cpu0 = pids.map(cpuSeconds);
  const t0 = performance.now();
  const stat = spawn('perf', ['stat', '-x', ',', '-e', events, '-p', pids.join(','), '--', 'sleep', String(SECONDS)], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let statOut = '';
  stat.stderr.on('data', (d: Buffer) => (statOut += d.toString()));
  await new Promise((r) => stat.once('exit', r));
  const seconds = (performance.now() - t0) / 1000;
  const framesSeen = (await frames()) - f0;
  const cpu = pids.map((p, i) => cpuSeconds(p) - cpu0[i]!);
  await client.exited;
  const gbps = JSON.parse(client.stdout()).end.sum_received.bits_per_second / 1e9;
  await server.stop();

  // Report 1.
  const report = execFileSync(
    'perf',
    ['report', '-i', perfData, '--no-children', '--sort', 'comm,sym', '-g', 'none', '--stdio', '--percent-limit', '0'],
    { encoding: 'utf8', maxBuffer: 256 << 20, stdio: ['ignore', 'pipe', 'ignore'] },
  );
  const byWho = new Map<string, number>();
  const byWhat = new Map<string, number>();
  const byWhoWhat = new Map<string, number>();
  const topSymbols = new Map<string, number>();
  const unclassified = new Map<string, number>();
  let sum = 0;
  for (const line of report.split('\n')) {
    const m = /^\s+([\d.]+)%\s+(\S.*?)\s+\[([k.])\]\s+(.+?)\s*$/.exec(line);
    if (!m) continue;
    const share = Number(m[1]);
    const comm = m[2]!.trim();
    const kernel = m[3] === 'k';
    const sym = m[4]!;
    const w = who(comm, kernel);
    const t = w === 'idle' ? 'idle' : what(sym);
    sum += share;
    byWho.set(w, (byWho.get(w) ?? 0) + share);
    byWhat.set(t, (byWhat.get(t) ?? 0) + share);
    if (w.startsWith('gateway')) byWhoWhat.set(`${w}: ${t}`, (byWhoWhat.get(`${w}: ${t}`) ?? 0) + share);
    if (w !== 'idle') topSymbols.set(`${sym} [${comm}]`, (topSymbols.get(`${sym} [${comm}]`) ?? 0) + share);
    if (t === 'other') unclassified.set(sym, (unclassified.get(sym) ?? 0) + share);
  }
  console.log(
    `bench/profile: one iperf3 TCP stream through veil encrypted at ${gbps.toFixed(2)} Gbit/s (over ${total} s); node ${process.version}`,
  );
  console.log(`perf record -a -g -F 499, ${SECONDS} s: ${sum.toFixed(1)} % of the samples placed`);
  table('by thread', byWho, sum);
  table('by what it does (all threads but idle)', byWhat, sum);
  table("the gateways' threads, by what they do", byWhoWhat, sum, 30);
  table('top symbols', topSymbols, sum, 25);
  table('largest of "other"', unclassified, sum, 12);

  // The same samples by stage of the path: inclusive shares, so nested stages overlap.
  const inclusive = execFileSync(
    'perf',
    ['report', '-i', perfData, '--children', '--sort', 'comm,sym', '-g', 'none', '--stdio', '--percent-limit', '0'],
    { encoding: 'utf8', maxBuffer: 256 << 20, stdio: ['ignore', 'pipe', 'ignore'] },
  );
  const stage = new Map<string, number>();
  for (const line of inclusive.split('\n')) {
    const m = /^\s+([\d.]+)%\s+[\d.]+%\s+(\S+)\s+\[k\]\s+(\S+)\s*$/.exec(line);
    if (m) stage.set(`${m[2]} ${m[3]}`, Number(m[1]));
  }
  const threads = ['veil-out', 'veil-in', 'iperf3'];
  console.log(
    `\nby stage of the path, inclusive (% of all samples)\n  ${''.padEnd(66)}${threads.map((t) => t.padStart(9)).join('')}`,
  );
  for (const [sym, label] of STAGES)
    console.log(
      `  ${`${label} (${sym})`.padEnd(66)}${threads.map((t) => (stage.get(`${t} ${sym}`) ?? 0).toFixed(1).padStart(9)).join('')}`,
    );

  // Report 2 and 3.
  const calls = new Map<string, number>();
  for (const line of statOut.split('\n')) {
    const [count, , event] = line.split(',');
    if (!event?.startsWith('syscalls:sys_enter_') || !count || !/^\d+$/.test(count)) continue;
    if (Number(count) > 0) calls.set(event.slice('syscalls:sys_enter_'.length), Number(count));
  }
  const totalCalls = [...calls.values()].reduce((a, b) => a + b, 0);
  console.log(
    `\nthe gateways, ${seconds.toFixed(1)} s: ${framesSeen} frames sealed or opened (${Math.round(framesSeen / seconds)}/s), ${totalCalls} system calls: ${(totalCalls / framesSeen).toFixed(3)} per frame`,
  );
  for (const [name, n] of [...calls].sort((a, b) => b[1] - a[1]).slice(0, 12))
    console.log(`  ${name.padEnd(16)} ${String(n).padStart(9)}  ${(n / framesSeen).toFixed(3)} per frame`);
  const cpuTotal = cpu.reduce((a, b) => a + b, 0);
  console.log(
    `gateway CPU: ${cpu.map((c) => c.toFixed(2)).join(' + ')} s = ${((cpuTotal / seconds) * 100).toFixed(0)} % of one core; ${((cpuTotal / framesSeen) * 1e6).toFixed(2)} µs per frame`,
  );
} finally {
  await ob.destroy();
  if (!process.env.VEIL_PROFILE_KEEP) rmSync(perfData, { force: true });
}
process.exit(0);
