package firewalld

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/godbus/dbus/v5"
)

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
func (c *Client) Allows(ctx context.Context, zone string, port uint16, proto string) (Admission, error) {
	z, err := c.Zone(ctx, zone)
	if err != nil {
		return Admission{}, err
	}
	svcs, err := c.Services(ctx, z)
	if err != nil && IsNotAuthorized(err) {
		return Admission{}, fmt.Errorf("services of zone %s: %w", zone, err)
	}
	// Other failures leave services out: ZoneAllows says "unknown" where
	// only they might open the port.
	return ZoneAllows(z, svcs, port, proto), nil
}
