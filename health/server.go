package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Limits that keep slow or oversized clients from pinning the server. A
// health request is one short line plus a few headers.
const (
	readHeaderTimeout = 2 * time.Second
	readTimeout       = 5 * time.Second
	writeTimeout      = 10 * time.Second
	// idleTimeout is short: health checkers open a connection per probe,
	// a scraper's interval is longer than this anyway, and an idle
	// keep-alive connection holds one of the MaxHTTPConns slots.
	idleTimeout    = 5 * time.Second
	maxHeaderBytes = 8 << 10
	// retryListen is how long to wait before retrying a failed listen (the
	// port may still be held by a previous instance during a restart).
	retryListen = time.Second
)

// Server serves /healthz, /status and /metrics from State.
type Server struct {
	state   *State
	allowed atomic.Pointer[[]netip.Prefix]
	handler http.Handler
	log     *slog.Logger
}

// NewServer returns a server for state; call Run to serve.
func NewServer(state *State, allowed []netip.Prefix, log *slog.Logger) *Server {
	s := &Server{state: state, log: log}
	s.SetAllowed(allowed)
	metrics := promhttp.HandlerFor(state.Metrics().Registry, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError, MaxRequestsInFlight: 8,
	})
	// Three fixed paths: a switch is cheaper than a ServeMux on the hot
	// /healthz path, which load balancers hit from every director.
	s.handler = s.guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			s.healthz(w, r)
		case "/status":
			s.status(w, r)
		case "/metrics":
			metrics.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	}))
	return s
}

// Shared header values: assigning them directly skips canonicalisation and
// an allocation per request. Handlers never modify them.
var (
	textPlain = []string{"text/plain; charset=utf-8"}
	noStore   = []string{"no-store"}
)

// Handler returns the HTTP handler (for tests and benchmarks).
func (s *Server) Handler() http.Handler { return s.handler }

// SetAllowed replaces allowed_sources (reload without rebinding).
func (s *Server) SetAllowed(p []netip.Prefix) {
	cp := append([]netip.Prefix(nil), p...)
	s.allowed.Store(&cp)
}

// guard enforces the read-only method set before any handler runs: nothing
// on HTTP changes state. allowed_sources is enforced at accept already; the
// check here covers a connection accepted just before a reload narrowed it.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if allowed := *s.allowed.Load(); len(allowed) > 0 && !sourceAllowed(allowed, r.RemoteAddr) {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	v := s.state.Verdict()
	h := w.Header()
	h["Content-Type"] = textPlain
	h["Cache-Control"] = noStore
	code := http.StatusOK
	if !v.Healthy {
		code = http.StatusServiceUnavailable
	}
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		_, _ = w.Write(v.Body)
	}
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	b, err := s.state.StatusJSON()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
}

// Run listens on addr (retrying until it can, e.g. while a previous instance
// still holds the port) and serves until ctx is done.
func (s *Server) Run(ctx context.Context, addr string) error {
	for {
		lns, err := listenFanout(ctx, addr)
		if err == nil {
			return s.serve(ctx, lns...)
		}
		s.log.Warn("health: cannot listen yet, retrying", "listen", addr, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retryListen):
		}
	}
}

// serve serves on lns, the sockets of one port (listenFanout), which share
// one connection cap.
func (s *Server) serve(ctx context.Context, lns ...net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	g := newConnGuard("http", MaxHTTPConns, func() []netip.Prefix { return *s.allowed.Load() }, s.state.Metrics())
	srv.ConnState = g.connState
	s.log.Info("health: serving", "listen", lns[0].Addr().String(), "max_conns", MaxHTTPConns, "sockets", len(lns))
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		case <-done:
		}
	}()
	errs := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { errs <- srv.Serve(&guardedListener{Listener: ln, connGuard: g}) }()
	}
	var err error
	for range lns {
		if e := <-errs; err == nil && !errors.Is(e, http.ErrServerClosed) {
			err = e
			_ = srv.Close() // one socket failed: stop the others, Run's caller decides
		}
	}
	close(done)
	if err != nil {
		return fmt.Errorf("health server: %w", err)
	}
	return nil
}
