// Package firewalld asks a running firewalld, over its D-Bus API
// (org.fedoraproject.FirewallD1), whether it lets in the traffic a DSR real
// server needs: each VIP port in the zone of the LB-facing interface, the
// health and agent-check ports, and (firewalld mode) traffic redirected by
// dsr-agent's own nat table. It only reads: dsr-agent never changes
// firewalld's configuration, it prints the firewall-cmd line that would.
//
// The queries read firewalld's runtime configuration (what is in force now);
// Findings turns the answers into findings with the fix. Rich rules and
// source-bound zones are not evaluated: a port allowed only by a rich rule is
// reported as unknown, never as open.
package firewalld

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"
)

// firewalld's D-Bus names (firewall/config/dbus.py).
const (
	BusName         = "org.fedoraproject.FirewallD1"
	objectPath      = dbus.ObjectPath("/org/fedoraproject/FirewallD1")
	configPath      = dbus.ObjectPath("/org/fedoraproject/FirewallD1/config")
	ifaceMain       = "org.fedoraproject.FirewallD1"
	ifaceZone       = ifaceMain + ".zone"
	ifaceConfig     = ifaceMain + ".config"
	propGet         = "org.freedesktop.DBus.Properties.Get"
	nameHasOwner    = "org.freedesktop.DBus.NameHasOwner"
	defaultDeadline = 5 * time.Second
)

// Client is a private connection to one D-Bus bus (the system bus, or a test
// bus) and the firewalld object on it.
type Client struct {
	conn *dbus.Conn
	obj  dbus.BusObject
	cfg  dbus.BusObject
}

// Connect opens a private connection to the system bus (DBUS_SYSTEM_BUS_ADDRESS
// when set, else /run/dbus/system_bus_socket). Private, so Close never closes
// a connection another part of the process shares (dbus.SystemBus is shared).
func Connect(ctx context.Context) (*Client, error) {
	conn, err := dbus.ConnectSystemBus(dbus.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("connect to the D-Bus system bus: %w", err)
	}
	return newClient(conn), nil
}

// ConnectAddress opens a private connection to the bus at addr
// ("unix:path=/tmp/x/bus"): tests run firewalld on a bus of their own.
func ConnectAddress(ctx context.Context, addr string) (*Client, error) {
	conn, err := dbus.Connect(addr, dbus.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("connect to D-Bus at %s: %w", addr, err)
	}
	return newClient(conn), nil
}

func newClient(conn *dbus.Conn) *Client {
	return &Client{
		conn: conn,
		obj:  conn.Object(BusName, objectPath),
		cfg:  conn.Object(BusName, configPath),
	}
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// withDeadline bounds every call: a wedged firewalld (it is single-threaded
// python and blocks during a reload) must not hang validate or status.
func withDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, defaultDeadline)
}

func (c *Client) call(ctx context.Context, obj dbus.BusObject, method string, out any, args ...any) error {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	call := obj.CallWithContext(ctx, method, 0, args...)
	if call.Err != nil {
		return fmt.Errorf("firewalld %s(%s): %w", method, argList(args), call.Err)
	}
	if err := call.Store(out); err != nil {
		return fmt.Errorf("firewalld %s(%s): decode reply: %w", method, argList(args), err)
	}
	return nil
}

func argList(args []any) string {
	s := make([]string, len(args))
	for i, a := range args {
		s[i] = fmt.Sprintf("%q", fmt.Sprint(a))
	}
	return strings.Join(s, ", ")
}

// ErrNotAuthorized: firewalld (through polkit, or its uid-0 fallback when
// polkit is absent) refused to show its configuration. Reading zone
// settings needs the config.info action, which polkit grants only to
// admins: `dsr-agent validate` as an ordinary user gets this.
var ErrNotAuthorized = errors.New("firewalld refused to show its configuration to this user (run as root)")

// IsNotAuthorized tells firewalld's and the bus's refusals from other
// errors.
func IsNotAuthorized(err error) bool {
	if errors.Is(err, ErrNotAuthorized) {
		return true
	}
	// godbus returns error replies as dbus.Error values, and some of its
	// own errors as *dbus.Error: accept both.
	name := ""
	var de dbus.Error
	var dep *dbus.Error
	switch {
	case errors.As(err, &de):
		name = de.Name
	case errors.As(err, &dep):
		name = dep.Name
	}
	return name == ifaceMain+".NotAuthorizedException" || name == "org.freedesktop.DBus.Error.AccessDenied"
}

// Running reports whether firewalld owns its bus name. It asks the bus, not
// firewalld, so a host without firewalld answers false at once.
func (c *Client) Running(ctx context.Context) (bool, error) {
	var has bool
	if err := c.call(ctx, c.conn.BusObject(), nameHasOwner, &has, BusName); err != nil {
		return false, fmt.Errorf("is firewalld running: %w", err)
	}
	return has, nil
}

func (c *Client) property(ctx context.Context, obj dbus.BusObject, iface, name string) (dbus.Variant, error) {
	var v dbus.Variant
	if err := c.call(ctx, obj, propGet, &v, iface, name); err != nil {
		return dbus.Variant{}, err
	}
	return v, nil
}

// Version is firewalld's version ("1.3.3").
func (c *Client) Version(ctx context.Context) (string, error) {
	v, err := c.property(ctx, c.obj, ifaceMain, "version")
	if err != nil {
		return "", err
	}
	s, ok := v.Value().(string)
	if !ok {
		return "", fmt.Errorf("firewalld version property: got %s, want a string", v.Signature())
	}
	return s, nil
}
