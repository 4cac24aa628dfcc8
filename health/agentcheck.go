package health

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// AgentServer answers HAProxy's agent-check: on every connection it writes
// one line ("up ready", "up drain", "down ready", "maint", ...) and closes, as
// the agent protocol expects. The line was computed before the connection
// arrived.
type AgentServer struct {
	state   *State
	allowed atomic.Pointer[[]netip.Prefix]
	log     *slog.Logger
}

// NewAgentServer returns an agent-check server for state.
func NewAgentServer(state *State, allowed []netip.Prefix, log *slog.Logger) *AgentServer {
	a := &AgentServer{state: state, log: log}
	a.SetAllowed(allowed)
	return a
}

// SetAllowed replaces allowed_sources.
func (a *AgentServer) SetAllowed(p []netip.Prefix) {
	cp := append([]netip.Prefix(nil), p...)
	a.allowed.Store(&cp)
}

// Run listens on addr (retrying) and answers until ctx is done. The port is
// listenFanout's sockets, as the health port: a host reconnecting as fast as
// it is reset fills only its own accept queue.
func (a *AgentServer) Run(ctx context.Context, addr string) error {
	for {
		lns, err := listenFanout(ctx, addr)
		if err == nil {
			return a.serve(ctx, lns...)
		}
		a.log.Warn("agent-check: cannot listen yet, retrying", "listen", addr, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retryListen):
		}
	}
}

// serve answers on lns, the sockets of one port, which share one
// connection cap; it returns when ctx is done.
func (a *AgentServer) serve(ctx context.Context, lns ...net.Listener) error {
	g := newConnGuard("agent", MaxAgentConns, func() []netip.Prefix { return *a.allowed.Load() }, a.state.Metrics())
	a.log.Info("agent-check: serving", "listen", lns[0].Addr().String(), "max_conns", MaxAgentConns, "sockets", len(lns))
	var wg sync.WaitGroup
	for _, ln := range lns {
		gl := &guardedListener{Listener: ln, connGuard: g}
		stop := context.AfterFunc(ctx, func() { gl.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer stop()
			a.acceptLoop(ctx, gl)
		}()
	}
	wg.Wait()
	return nil
}

func (a *AgentServer) acceptLoop(ctx context.Context, ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// Transient (EMFILE and the like): back off instead of spinning.
			a.log.Warn("agent-check: accept", "err", err)
			time.Sleep(rejectBackoff)
			continue
		}
		go a.answer(conn)
	}
}

func (a *AgentServer) answer(conn net.Conn) {
	defer conn.Close()
	// allowed_sources and the cap were enforced at accept.
	_ = conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	_, _ = conn.Write(a.state.Verdict().Agent)
}
