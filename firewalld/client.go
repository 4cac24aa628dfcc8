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
	"strconv"
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

// DefaultZone is the zone of every interface not bound to another one.
func (c *Client) DefaultZone(ctx context.Context) (string, error) {
	var z string
	if err := c.call(ctx, c.obj, ifaceMain+".getDefaultZone", &z); err != nil {
		return "", err
	}
	return z, nil
}

// ZoneOfInterface is the zone whose rules apply to packets arriving on iface.
// firewalld answers "" for an interface it was never told about; such an
// interface is handled by the default zone, so that is returned, with
// isDefault true.
func (c *Client) ZoneOfInterface(ctx context.Context, iface string) (zone string, isDefault bool, err error) {
	if err := c.call(ctx, c.obj, ifaceZone+".getZoneOfInterface", &zone, iface); err != nil {
		return "", false, err
	}
	if zone != "" {
		return zone, false, nil
	}
	zone, err = c.DefaultZone(ctx)
	if err != nil {
		return "", false, fmt.Errorf("zone of %s (not bound, so the default zone): %w", iface, err)
	}
	return zone, true, nil
}

// Zone reads a zone's runtime settings (getZoneSettings2, firewalld ≥ 0.9).
func (c *Client) Zone(ctx context.Context, name string) (Zone, error) {
	var m map[string]dbus.Variant
	if err := c.call(ctx, c.obj, ifaceZone+".getZoneSettings2", &m, name); err != nil {
		return Zone{}, err
	}
	z, err := zoneFromDict(name, m)
	if err != nil {
		return Zone{}, fmt.Errorf("zone %s: %w", name, err)
	}
	return z, nil
}

// Service reads a service definition as the runtime knows it
// (getServiceSettings2).
func (c *Client) Service(ctx context.Context, name string) (Service, error) {
	var m map[string]dbus.Variant
	if err := c.call(ctx, c.obj, ifaceMain+".getServiceSettings2", &m, name); err != nil {
		return Service{}, err
	}
	s, err := serviceFromDict(name, m)
	if err != nil {
		return Service{}, fmt.Errorf("service %s: %w", name, err)
	}
	return s, nil
}

// ServiceState is how far firewalld knows a service definition.
type ServiceState int

const (
	// ServiceAbsent: no such service (the package is not installed, or
	// firewalld cannot read its XML): open the ports with --add-port.
	ServiceAbsent ServiceState = iota
	// ServiceInstalled: the permanent configuration has it (firewalld
	// watches its service directories and picks up a new file within
	// seconds) but the runtime does not until `firewall-cmd --reload`: a
	// runtime --add-service would fail with INVALID_SERVICE.
	ServiceInstalled
	// ServiceLoaded: the runtime has it.
	ServiceLoaded
)

func (s ServiceState) String() string {
	switch s {
	case ServiceLoaded:
		return "loaded"
	case ServiceInstalled:
		return "installed, not loaded (reload firewalld)"
	}
	return "absent"
}

// ServiceStateOf tells whether the runtime and the permanent configuration
// know a service. An error other than "no such service" is returned: a
// refusal must not be mistaken for absence.
// When loaded, the runtime definition is returned too (an administrator may
// have overridden the packaged ports in /etc/firewalld/services).
func (c *Client) ServiceStateOf(ctx context.Context, name string) (ServiceState, *Service, error) {
	s, err := c.Service(ctx, name)
	if err == nil {
		return ServiceLoaded, &s, nil
	}
	if !isInvalidService(err) {
		return ServiceAbsent, nil, err
	}
	var path dbus.ObjectPath
	err = c.call(ctx, c.cfg, ifaceConfig+".getServiceByName", &path, name)
	if err == nil {
		return ServiceInstalled, nil, nil
	}
	if isInvalidService(err) {
		return ServiceAbsent, nil, nil
	}
	return ServiceAbsent, nil, err
}

// isInvalidService: firewalld's FirewallError INVALID_SERVICE, sent as
// org.fedoraproject.FirewallD1.Exception with "INVALID_SERVICE: name".
func isInvalidService(err error) bool {
	var de dbus.Error
	if !errors.As(err, &de) || de.Name != ifaceMain+".Exception" || len(de.Body) == 0 {
		return false
	}
	msg, _ := de.Body[0].(string)
	return strings.HasPrefix(msg, "INVALID_SERVICE")
}

// maxIncludeDepth bounds service includes (firewalld ≥ 1.0 lets a service
// include others; a loop in hand-written XML must not loop here).
const maxIncludeDepth = 8

// Services reads the zone's services and, transitively, the ones they
// include. A service firewalld cannot describe is left out and its error
// returned alongside (the zone may still be judged by the others).
func (c *Client) Services(ctx context.Context, z Zone) (map[string]Service, error) {
	out := map[string]Service{}
	var errs []error
	todo := append([]string(nil), z.Services...)
	for depth := 0; len(todo) > 0 && depth < maxIncludeDepth; depth++ {
		var next []string
		for _, name := range todo {
			if _, done := out[name]; done {
				continue
			}
			s, err := c.Service(ctx, name)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			out[name] = s
			next = append(next, s.Includes...)
		}
		todo = next
	}
	return out, errors.Join(errs...)
}

// Allows reports whether the zone's runtime configuration lets in new
// connections to port/proto, and how.
func (c *Client) Allows(ctx context.Context, zone string, port uint16, proto string) (Verdict, error) {
	z, err := c.Zone(ctx, zone)
	if err != nil {
		return Verdict{}, err
	}
	svcs, err := c.Services(ctx, z)
	if err != nil && IsNotAuthorized(err) {
		return Verdict{}, fmt.Errorf("services of zone %s: %w", zone, err)
	}
	// Other failures leave services out: ZoneAllows says "unknown" where
	// only they might open the port.
	return ZoneAllows(z, svcs, port, proto), nil
}

// Redirects is whether firewalld lets in traffic that dsr-agent's own nat
// table redirected (firewalld mode).
type Redirects struct {
	Accepted bool
	// Version is firewalld's version; StrictForwardPorts the value read
	// ("" when this firewalld has no such setting, before 2.3).
	Version            string
	StrictForwardPorts string
	// Why says which rule decided, for the finding and the docs.
	Why string
}

// AcceptsRedirects asks firewalld whether it accepts traffic NATed by a table
// it did not create. Before 2.3 its filter_INPUT chain has
// `ct status dnat accept` (since 0.7) so a redirect is accepted in any zone
// without opening a port; 2.3 added StrictForwardPorts, and with =yes that
// blanket accept is gone: only firewalld's own forward-ports are let in.
func (c *Client) AcceptsRedirects(ctx context.Context) (Redirects, error) {
	ver, err := c.Version(ctx)
	if err != nil {
		return Redirects{}, err
	}
	maj, min, err := parseVersion(ver)
	if err != nil {
		return Redirects{}, err
	}
	strict := ""
	if maj > 2 || (maj == 2 && min >= 3) {
		v, err := c.property(ctx, c.cfg, ifaceConfig, "StrictForwardPorts")
		if err != nil {
			return Redirects{}, fmt.Errorf("firewalld %s: read StrictForwardPorts: %w", ver, err)
		}
		s, ok := v.Value().(string)
		if !ok {
			return Redirects{}, fmt.Errorf("firewalld StrictForwardPorts: got %s, want a string", v.Signature())
		}
		strict = s
	}
	return redirectVerdict(ver, maj, min, strict), nil
}

// redirectVerdict is the pure rule behind AcceptsRedirects.
func redirectVerdict(ver string, maj, min int, strict string) Redirects {
	r := Redirects{Version: ver, StrictForwardPorts: strict}
	switch {
	case maj < 2 || (maj == 2 && min < 3):
		r.Accepted = true
		r.Why = fmt.Sprintf("firewalld %s accepts NATed traffic (ct status dnat accept in filter_INPUT)", ver)
	case strings.EqualFold(strict, "yes") || strings.EqualFold(strict, "true"):
		r.Why = fmt.Sprintf("firewalld %s has StrictForwardPorts=%s: it rejects traffic NATed by rules it did not create", ver, strict)
	default:
		r.Accepted = true
		r.Why = fmt.Sprintf("firewalld %s has StrictForwardPorts=%s: it accepts NATed traffic (ct status dnat accept)", ver, strict)
	}
	return r
}

// parseVersion reads "1.3.3" or "2.3.0rc1" as major, minor.
func parseVersion(v string) (int, int, error) {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return 0, 0, fmt.Errorf("firewalld version %q: want MAJOR.MINOR[.PATCH]", v)
	}
	maj, err := strconv.Atoi(parts[0])
	if err != nil {
		return 0, 0, fmt.Errorf("firewalld version %q: major: %w", v, err)
	}
	// Keep the leading digits only ("3rc1" -> 3).
	m := parts[1]
	i := 0
	for i < len(m) && m[i] >= '0' && m[i] <= '9' {
		i++
	}
	min, err := strconv.Atoi(m[:i])
	if err != nil {
		return 0, 0, fmt.Errorf("firewalld version %q: minor: %w", v, err)
	}
	return maj, min, nil
}
