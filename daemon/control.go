package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/health"
)

// ControlSocket is the unix socket in the state dir on which the running
// daemon takes drain, undrain and reload. It is mode 0600 in a 0700
// directory, and the peer's uid is checked as well: only root (or the
// daemon's own user) may change rotation state.
//
// The protocol is one request line, one JSON Reply line:
//
//	status      the rotation state and the health verdict
//	sync-drain  apply STATE_DIR/drain, which the CLI has just written
//	reload      re-read the config, as SIGHUP does, and answer its outcome
//
// Drain is recorded by the CLI, not by the daemon: the file is the one place
// the operator's choice lives, the daemon only follows it. A kernel accepts
// a connection into the listen backlog even while the daemon is stopped, so
// a request can always be read long after its client gave up waiting; were
// the request itself the drain, a drain reported as failed would take effect
// later, and a drain and the undrain that took it back would both be
// replayed in turn. Acting on the file instead, the daemon applies whatever
// the operator last recorded, however late it reads the request, and the CLI
// can say exactly what is known when no answer comes: recorded, in effect
// when the daemon resumes (a restarted daemon reads the file at start).
const ControlSocket = "control.sock"

// Control requests.
const (
	ReqStatus    = "status"
	ReqSyncDrain = "sync-drain"
	ReqReload    = "reload"
)

// DefaultWait is how long a client waits for the daemon's answer.
const DefaultWait = 5 * time.Second

// ErrNotRunning means no daemon answers on the control socket.
var ErrNotRunning = errors.New("dsr-agent daemon not running")

// ErrUntrustedPeer means the process behind the control socket is not root
// (nor the caller's own user): its answers are not believed.
var ErrUntrustedPeer = errors.New("untrusted control socket")

// ErrNoAnswer means the request was sent and no answer came in time: the
// daemon will read it when it runs again.
var ErrNoAnswer = errors.New("the daemon did not answer")

// ErrNotSent means the request could not be sent: the daemon never saw it.
var ErrNotSent = errors.New("request not sent")

// ErrRefused means the daemon answered with an error (Reply.Error).
var ErrRefused = errors.New("refused by the daemon")

// Reply is the daemon's answer to a control request.
type Reply struct {
	Drain   string   `json:"drain"`
	Healthy bool     `json:"healthy"`
	Reasons []string `json:"reasons"`
	// Message is a reload's outcome ("reloaded: mode loopback, 2 VIP(s)").
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

// reloadRequest asks the reconcile loop, the only goroutine that may swap
// the config, for a reload; it answers on the channel.
type reloadRequest chan Reply

type control struct {
	ln    *net.UnixListener
	state *health.State
	dir   string
	log   *slog.Logger
	// reloads is read by the reconcile loop.
	reloads chan reloadRequest

	// mu orders the read of the drain file and the publication of what
	// was read: two requests handled at once must not publish an older
	// read after a newer one.
	mu           sync.Mutex
	lastDrainErr string
}

func listenControl(stateDir string, state *health.State, log *slog.Logger) (*control, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	path := filepath.Join(stateDir, ControlSocket)
	// A socket left by a crashed daemon is removed; a live one means another
	// daemon owns this state dir, and two would fight over the host.
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another dsr-agent daemon is running with state dir %s (control socket %s answers)", stateDir, path)
	}
	_ = os.Remove(path)
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return &control{ln: ln, state: state, dir: stateDir, log: log, reloads: make(chan reloadRequest)}, nil
}

func (c *control) Close() { c.ln.Close() }

func (c *control) serve(ctx context.Context) {
	go func() {
		<-ctx.Done()
		c.ln.Close()
	}()
	for {
		conn, err := c.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			c.log.Warn("control socket accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		go c.handle(ctx, conn)
	}
}

func peerUID(conn *net.UnixConn) (uint32, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var serr error
	err = raw.Control(func(fd uintptr) { cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, serr
	}
	return cred.Uid, nil
}

func (c *control) handle(ctx context.Context, conn *net.UnixConn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(DefaultWait))
	enc := json.NewEncoder(conn)
	uid, err := peerUID(conn)
	if err != nil || (uid != 0 && uid != uint32(os.Geteuid())) {
		_ = enc.Encode(Reply{Error: "permission denied"})
		return
	}
	line, err := bufio.NewReader(io.LimitReader(conn, 256)).ReadString('\n')
	if err != nil {
		return
	}
	// A client that gave up has closed its end by now; the request is
	// carried out all the same (that is what the client was told), only
	// the answer is lost.
	switch cmd := strings.TrimSpace(line); cmd {
	case ReqStatus:
		_ = enc.Encode(c.reply(""))
	case ReqSyncDrain:
		errMsg := ""
		if err := c.syncDrain("operator"); err != nil {
			errMsg = err.Error()
		}
		_ = enc.Encode(c.reply(errMsg))
	case ReqReload:
		answer := make(reloadRequest, 1)
		var r Reply
		select {
		case c.reloads <- answer:
			select {
			case r = <-answer:
			case <-ctx.Done():
				r = Reply{Error: "daemon stopping"}
			}
		case <-ctx.Done():
			r = Reply{Error: "daemon stopping"}
		}
		// A big reload may outlast the read deadline.
		_ = conn.SetWriteDeadline(time.Now().Add(DefaultWait))
		_ = enc.Encode(r)
	default:
		_ = enc.Encode(Reply{Error: fmt.Sprintf("unknown request %q", cmd)})
	}
}

// syncDrain makes the health state follow STATE_DIR/drain. An unreadable
// file keeps the current state (logged once per distinct error): a corrupt
// file must not flip rotation either way.
func (c *control) syncDrain(trigger string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	mode, err := health.LoadDrain(c.dir)
	if err != nil {
		if msg := err.Error(); msg != c.lastDrainErr {
			c.log.Error("cannot read drain state; keeping the current one", "drain", c.state.Drain().String(), "err", err)
			c.lastDrainErr = msg
		}
		return err
	}
	c.lastDrainErr = ""
	if mode == c.state.Drain() {
		return nil
	}
	c.state.SetDrain(mode)
	c.log.Warn("rotation state changed by operator", "drain", mode.String(), "trigger", trigger)
	return nil
}

func (c *control) reply(errMsg string) Reply {
	v := c.state.Verdict()
	return Reply{Drain: c.state.Drain().String(), Healthy: v.Healthy, Reasons: v.Reasons, Error: errMsg}
}

// Client is a connection to the running daemon's control socket, whose
// server has been checked to be root or the caller's own user.
type Client struct {
	conn *net.UnixConn
	path string
}

// Dial connects to the daemon running with stateDir. It returns
// ErrNotRunning when no daemon listens and ErrUntrustedPeer when the socket's
// server is neither root nor the caller. A stopped daemon is still dialled:
// the kernel queues the connection until it runs again.
func Dial(stateDir string) (*Client, error) {
	path := filepath.Join(stateDir, ControlSocket)
	conn, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w (no listener on %s)", ErrNotRunning, path)
		}
		return nil, fmt.Errorf("reach daemon on %s: %w", path, err)
	}
	uc := conn.(*net.UnixConn)
	// Believe only a daemon running as root (or as ourselves): whoever can
	// plant a socket at this path could otherwise tell the operator that a
	// drain took effect when nothing listens to it. SO_PEERCRED is the
	// listener's credentials, taken by the kernel at listen(2).
	uid, err := peerUID(uc)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("control socket %s: read peer credentials: %w", path, err)
	}
	if uid != 0 && uid != uint32(os.Geteuid()) {
		conn.Close()
		return nil, fmt.Errorf("%w: control socket %s is served by uid %d, not root; not trusting its answer (remove it, check who can write %s)",
			ErrUntrustedPeer, path, uid, filepath.Dir(path))
	}
	return &Client{conn: uc, path: path}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Do sends cmd and waits up to wait for the answer. After a send that
// worked the request is the daemon's: ErrNoAnswer (or a read error) means
// it will be read when the daemon runs again. An answer with an error wraps
// ErrRefused and still returns the reply.
func (c *Client) Do(cmd string, wait time.Duration) (*Reply, error) {
	_ = c.conn.SetDeadline(time.Now().Add(wait))
	if _, err := fmt.Fprintf(c.conn, "%s\n", cmd); err != nil {
		return nil, fmt.Errorf("%w: send %s to daemon: %w", ErrNotSent, cmd, err)
	}
	var r Reply
	if err := json.NewDecoder(c.conn).Decode(&r); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, fmt.Errorf("%w within %v", ErrNoAnswer, wait)
		}
		return nil, fmt.Errorf("read daemon reply: %w", err)
	}
	if r.Error != "" {
		return &r, fmt.Errorf("%w: %s: %s", ErrRefused, cmd, r.Error)
	}
	return &r, nil
}

// Request sends cmd (status, sync-drain, reload) to the daemon running with
// stateDir and waits DefaultWait for the answer. It returns ErrNotRunning
// when no daemon listens.
func Request(stateDir, cmd string) (*Reply, error) {
	c, err := Dial(stateDir)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Do(cmd, DefaultWait)
}
