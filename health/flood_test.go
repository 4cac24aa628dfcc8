package health

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Flood clients for the tests and benchmarks of the connection caps. Every
// kind reconnects when the server closes or resets its connection, as a
// real attacker (or a misbehaving client) does.
type floodKind int

const (
	// slowHeaders: a request line and headers that never end, one byte
	// per floodByteEvery (slowloris).
	slowHeaders floodKind = iota
	// idleKeepAlive: one complete request, then the connection is held
	// open and idle.
	idleKeepAlive
	// silent: connects and never sends nor reads (the agent-check port,
	// whose protocol has the server speak first).
	silent
	// plainRequests: a complete request per connection, as fast as the
	// server answers or resets (used from a source outside allowed_sources).
	plainRequests
)

const floodByteEvery = 500 * time.Millisecond

// A flood runs in a child process (the test binary again, in
// TestFloodHelper), as an attacker on another host would: its thousands of
// goroutines must not compete with the server's in one Go scheduler, or
// the latencies measured would be the scheduler's.
type flood struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	dials int64 // set by stop: connections established, reconnections included
}

const floodEnv = "DSR_AGENT_TEST_FLOOD" // addr,src,n,kind for TestFloodHelper

// startFlood opens n connections of kind from src to addr and returns once
// each has been established once (and sent its first byte, where it sends).
func startFlood(tb testing.TB, addr, src string, n int, kind floodKind) *flood {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFloodHelper$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%s,%d,%d", floodEnv, addr, src, n, kind))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	f := &flood{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	tb.Cleanup(f.stop)
	if line, err := f.out.ReadString('\n'); line != "ready\n" {
		tb.Fatalf("flood helper: %q %v", line, err)
	}
	return f
}

// stop ends the flood and collects its count of connections.
func (f *flood) stop() {
	if f.stdin == nil {
		return
	}
	f.stdin.Close()
	f.stdin = nil
	if line, err := f.out.ReadString('\n'); err == nil {
		_, _ = fmt.Sscanf(line, "dials %d", &f.dials)
	}
	_ = f.cmd.Wait()
}

// TestFloodHelper is the flood's process (see flood); without floodEnv it
// does nothing.
func TestFloodHelper(t *testing.T) {
	spec := os.Getenv(floodEnv)
	if spec == "" {
		return
	}
	var addr, src string
	var n, kind int
	parts := strings.Split(spec, ",")
	addr, src = parts[0], parts[1]
	n, _ = strconv.Atoi(parts[2])
	kind, _ = strconv.Atoi(parts[3])
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var ready sync.WaitGroup
	var dials atomic.Int64
	ready.Add(n)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			once := sync.OnceFunc(ready.Done)
			defer once()
			for ctx.Err() == nil {
				c, err := d.DialContext(ctx, "tcp", addr)
				if err != nil {
					// Refused or reset before the handshake ended:
					// retry after a pause rather than spin.
					select {
					case <-ctx.Done():
					case <-time.After(10 * time.Millisecond):
					}
					continue
				}
				dials.Add(1)
				hold(ctx, c, floodKind(kind), once)
				c.Close()
			}
		}()
	}
	ready.Wait()
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes it
	cancel()
	wg.Wait()
	fmt.Printf("dials %d\n", dials.Load())
	os.Exit(0) // no PASS line on stdout for the parent to read
}

// hold plays one connection of kind until the server drops it or ctx ends.
func hold(ctx context.Context, c net.Conn, kind floodKind, ready func()) {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	switch kind {
	case slowHeaders:
		t := time.NewTicker(floodByteEvery)
		defer t.Stop()
		msg := []byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
		for i := 0; ; i++ {
			b := byte('a')
			if i < len(msg) {
				b = msg[i]
			}
			if _, err := c.Write([]byte{b}); err != nil {
				return
			}
			ready()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	case idleKeepAlive:
		if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			return
		}
		ready()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		_, _ = c.Read(make([]byte, 1)) // until the server closes it
	case silent:
		ready()
		<-ctx.Done()
	case plainRequests:
		ready()
		_, _ = c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
		_, _ = io.Copy(io.Discard, c)
	}
}

// startHealthServer serves a healthy State on a free loopback port with
// allowed_sources allowed, and returns its address.
func startHealthServer(tb testing.TB, allowed []netip.Prefix) string {
	tb.Helper()
	s := NewState()
	s.SetSnapshot(okSnapshot())
	srv := NewServer(s, allowed, quietLog())
	lns, err := listenFanout(context.Background(), "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.serve(ctx, lns...) }()
	tb.Cleanup(func() { cancel(); <-done })
	return lns[0].Addr().String()
}

// startAgentServer does the same for the agent-check port.
func startAgentServer(tb testing.TB, allowed []netip.Prefix) string {
	tb.Helper()
	s := NewState()
	s.SetSnapshot(okSnapshot())
	a := NewAgentServer(s, allowed, quietLog())
	lns, err := listenFanout(context.Background(), "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.serve(ctx, lns...) }()
	tb.Cleanup(func() { cancel(); <-done })
	return lns[0].Addr().String()
}

// healthzOnce is one director's check: a new connection, GET /healthz.
func healthzOnce(addr string, timeout time.Duration) (time.Duration, error) {
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	start := time.Now()
	resp, err := client.Get("http://" + addr + "/healthz")
	if err != nil {
		return time.Since(start), err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return time.Since(start), fmt.Errorf("status %d", resp.StatusCode)
	}
	return time.Since(start), nil
}

// agentOnce is one HAProxy agent check: connect, read the line.
func agentOnce(addr string, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return time.Since(start), err
	}
	defer c.Close()
	_ = c.SetDeadline(start.Add(timeout))
	b, err := io.ReadAll(c)
	if err == nil && string(b) != "up ready\n" {
		err = fmt.Errorf("answer %q", b)
	}
	return time.Since(start), err
}

var (
	loopbackAllowed = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("127.0.0.2/32")}
	attackerSource  = "127.0.0.2" // inside allowed_sources
	outsideSource   = "127.0.0.3" // outside
)

// 2,000 connections from an allowed source sending their headers one byte
// at a time must not keep a director's checks out: each check is answered
// 200 (the latency is measured by BenchmarkHealthzUnderFlood).
func TestSlowHeadersDoNotStarveChecks(t *testing.T) {
	addr := startHealthServer(t, loopbackAllowed)
	startFlood(t, addr, attackerSource, 2000, slowHeaders)
	var failed []error
	for range 20 {
		if _, err := healthzOnce(addr, 2*time.Second); err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) > 0 {
		t.Fatalf("%d of 20 checks failed during the slow-header flood, first: %v", len(failed), failed[0])
	}
}

// The same on the agent-check port, with clients that connect and never
// read or close.
func TestSilentClientsDoNotStarveAgentCheck(t *testing.T) {
	addr := startAgentServer(t, loopbackAllowed)
	startFlood(t, addr, attackerSource, 2000, silent)
	var failed []error
	for range 20 {
		if _, err := agentOnce(addr, 2*time.Second); err != nil && !errors.Is(err, io.EOF) {
			failed = append(failed, err)
		}
	}
	if len(failed) > 0 {
		t.Fatalf("%d of 20 agent checks failed during the flood, first: %v", len(failed), failed[0])
	}
}

// Each source address is queued on the socket its hash names, the same for
// all its connections, and sources spread over the sockets.
func TestListenFanoutSteersBySource(t *testing.T) {
	lns, err := listenFanout(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if len(lns) != fanoutSockets {
		t.Fatalf("%d sockets, want %d", len(lns), fanoutSockets)
	}
	type hit struct {
		src  string
		sock int
	}
	hits := make(chan hit, 64)
	for i, ln := range lns {
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				hits <- hit{remoteAddr(c.RemoteAddr()).String(), i}
				c.Close()
			}
		}()
	}
	// The program's hash, computed here: Fibonacci hashing of the address.
	want := func(src string) int {
		a := netip.MustParseAddr(src).As4()
		v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
		return int(v * 0x9e3779b1 >> 28)
	}
	used := map[int]bool{}
	for i := 2; i < 34; i++ {
		src := fmt.Sprintf("127.0.0.%d", i)
		for range 2 {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			c, err := d.Dial("tcp", lns[0].Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			h := <-hits
			c.Close()
			if h.src != src || h.sock != want(src) {
				t.Fatalf("connection from %s accepted on socket %d (from %s), want %d", src, h.sock, h.src, want(src))
			}
			used[h.sock] = true
		}
	}
	if len(used) < fanoutSockets/2 {
		t.Errorf("32 sources used %d of %d sockets", len(used), fanoutSockets)
	}
}
