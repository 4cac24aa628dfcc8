// Package tunnel owns the kernel side of L3 DSR (mode: tunnel): the
// decapsulation devices a director's IPIP or GUE packets arrive on, and the
// GUE receive port.
//
// The director (IPVS lb_kind TUN, Katran, Cloudflare's Unimog...) wraps each
// client packet, still addressed to the VIP, in an outer IP header addressed
// to the real server's own IP (IPIP), or in outer IP + UDP + a GUE header
// (GUE). The real server unwraps it on a tunnel device and, since the VIP is
// on lo (loopback mode's job), answers straight to the client from the VIP.
//
// What this package manages:
//   - IPv4: tunl0, the fallback device the ipip module creates in every network
//     namespace. An IPIP packet whose outer addresses match no configured
//     tunnel lands there; it only has to be up.
//   - IPv6: ip6tnl0, ip6_tunnel's fallback device (ip6ip6, any remote, any local;
//     a device dsr-agent creates when there is none is "mode any": ip6ip6 and ip4ip6).
//   - GUE: a fou socket (`ip fou add port 6080 gue`). fou strips the UDP and GUE
//     headers and hands the inner packet to the IP protocol its GUE header
//     names (IPPROTO_IPIP: ipip, so it too lands on tunl0). IPv4 and IPv6 fou
//     sockets are separate (one per address family and port).
//
// Modules are loaded with modprobe when the device is missing. A module is
// never unloaded: other tunnels may use it. With
// net.core.fb_tunnels_only_for_init_net set, a namespace other than the
// initial one gets no fallback device; then one with the fallback's
// parameters (no local, no remote: a wildcard receiver) is created under the
// same name, and owned.
//
// Ownership: Owned records what dsr-agent brought up, created or added;
// removal undoes only that. A tunnel or fou port someone else made is never
// touched, and a fou port on our number with another encapsulation is a
// conflict, not something to replace.
//
// The *netlink.Handle passed in must include unix.NETLINK_GENERIC when it is
// bound to another network namespace (netlink.NewHandleAt(ns,
// unix.NETLINK_ROUTE, unix.NETLINK_GENERIC)): the fou requests are generic
// netlink, and vishvananda/netlink sends a request for a family the handle
// lacks on a fresh socket in the calling thread's namespace. For the same
// reason a handle on another namespace goes with Step.ApplyIn(h, ns): adding a
// GUE port opens a socket of its own (see fouAdd); Step.Apply is for the
// caller's own namespace (the daemon's case).
package tunnel
