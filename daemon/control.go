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
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/health"
)

// ControlSocket is the unix socket in the state dir on which the running
// daemon takes drain/undrain. It is mode 0600 in a 0700 directory, and the
// peer's uid is checked as well: only root (or the daemon's own user) may
// change rotation state.
const ControlSocket = "control.sock"

// ErrNotRunning means no daemon answers on the control socket.
var ErrNotRunning = errors.New("dsr-agent daemon not running")

// ErrUntrustedPeer means the process behind the control socket is not root
// (nor the caller's own user): its answers are not believed.
var ErrUntrustedPeer = errors.New("untrusted control socket")

// Reply is the daemon's answer to a control request.
type Reply struct {
	Drain   string   `json:"drain"`
	Healthy bool     `json:"healthy"`
	Reasons []string `json:"reasons"`
	Error   string   `json:"error,omitempty"`
}

type control struct {
	ln    *net.UnixListener
	state *health.State
	dir   string
	log   *slog.Logger
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
	return &control{ln: ln, state: state, dir: stateDir, log: log}, nil
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
		go c.handle(conn)
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

func (c *control) handle(conn *net.UnixConn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
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
	cmd := strings.TrimSpace(line)
	if cmd == "status" {
		_ = enc.Encode(c.reply(""))
		return
	}
	mode, ok := health.ParseRequest(cmd)
	if !ok {
		_ = enc.Encode(Reply{Error: fmt.Sprintf("unknown request %q", cmd)})
		return
	}
	// Persist first: if the write fails the operator must know the drain
	// would not survive a restart.
	if err := health.SaveDrain(c.dir, mode); err != nil {
		_ = enc.Encode(c.reply(err.Error()))
		return
	}
	c.state.SetDrain(mode)
	c.log.Warn("rotation state changed by operator", "drain", mode.String())
	_ = enc.Encode(c.reply(""))
}

func (c *control) reply(errMsg string) Reply {
	v := c.state.Verdict()
	return Reply{Drain: c.state.Drain().String(), Healthy: v.Healthy, Reasons: v.Reasons, Error: errMsg}
}

// Request sends cmd (drain, maint, undrain, status) to the daemon running
// with stateDir. It returns ErrNotRunning when no daemon listens.
func Request(stateDir, cmd string) (*Reply, error) {
	path := filepath.Join(stateDir, ControlSocket)
	conn, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w (no listener on %s)", ErrNotRunning, path)
		}
		return nil, fmt.Errorf("reach daemon on %s: %w", path, err)
	}
	defer conn.Close()
	// Believe only a daemon running as root (or as ourselves): whoever can
	// plant a socket at this path could otherwise tell the operator that a
	// drain took effect when nothing listens to it. SO_PEERCRED is the
	// listener's credentials, taken by the kernel at listen(2).
	uid, err := peerUID(conn.(*net.UnixConn))
	if err != nil {
		return nil, fmt.Errorf("control socket %s: read peer credentials: %w", path, err)
	}
	if uid != 0 && uid != uint32(os.Geteuid()) {
		return nil, fmt.Errorf("%w: control socket %s is served by uid %d, not root; not trusting its answer (remove it, check who can write %s)",
			ErrUntrustedPeer, path, uid, stateDir)
	}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(conn, "%s\n", cmd); err != nil {
		return nil, fmt.Errorf("send %s to daemon: %w", cmd, err)
	}
	var r Reply
	if err := json.NewDecoder(conn).Decode(&r); err != nil {
		return nil, fmt.Errorf("read daemon reply: %w", err)
	}
	if r.Error != "" {
		return &r, fmt.Errorf("daemon refused %s: %s", cmd, r.Error)
	}
	return &r, nil
}
