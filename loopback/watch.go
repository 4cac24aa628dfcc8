package loopback

import (
	"context"
	"encoding/binary"
	"log/slog"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/resubscribe"
)

// AddressAdded is the trigger for an address added anywhere. It is not drift
// (dsr-agent never removes addresses it does not own), so a daemon whose
// last pass worked ignores it -- its own repairs add addresses -- but one
// whose last pass failed for want of a host fact (a network manager deleted
// the NIC's own address, which arptables mode and health.listen need) retries
// the moment the address is back instead of at its next backoff.
const AddressAdded = "address-added"

// WatchAddrs wakes with "address" when an address is deleted anywhere: that
// is how a VIP disappears (ip addr del/flush, a network manager); and with
// AddressAdded when one is added.
func WatchAddrs(ctx context.Context, wake resubscribe.Wake, log *slog.Logger) {
	watchAddrs(ctx, netns.None(), wake, log, nil)
}

// watchAddrs is WatchAddrs in the namespace ns; ready, when not nil, is
// called each time the subscription is open.
func watchAddrs(ctx context.Context, ns netns.NsHandle, wake resubscribe.Wake, log *slog.Logger, ready func()) {
	watch(ctx, ns, "address", []int{unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV6_IFADDR}, wake, log,
		func(*subscription) func(typ uint16, body []byte) {
			if ready != nil {
				ready()
			}
			return func(typ uint16, _ []byte) {
				switch typ {
				case unix.RTM_NEWADDR:
					wake(AddressAdded)
				case unix.RTM_DELADDR:
					wake("address")
				}
			}
		})
}

// WatchLinks wakes with "link" when an interface appears, is renamed, comes
// up, changes its MTU or goes away: a re-created NIC comes back with default per-interface
// sysctls and without addresses.
func WatchLinks(ctx context.Context, wake resubscribe.Wake, log *slog.Logger) {
	watchLinks(ctx, netns.None(), wake, log, nil)
}

// watchLinks is WatchLinks in the namespace ns; ready, when not nil, is
// called each time the existing links are listed.
func watchLinks(ctx context.Context, ns netns.NsHandle, wake resubscribe.Wake, log *slog.Logger, ready func()) {
	watch(ctx, ns, "link", []int{unix.RTNLGRP_LINK}, wake, log, func(s *subscription) func(uint16, []byte) {
		type seen struct {
			name string
			up   bool
			mtu  uint32 // mode tunnel's default MSS follows the NIC's MTU
		}
		known := map[int32]seen{}
		// The links that exist are not a change: they are listed first, up
		// to the listing's end (NLMSG_DONE), and only fill known.
		listing := true
		if err := s.request(unix.RTM_GETLINK, make([]byte, unix.SizeofIfInfomsg)); err != nil {
			log.Warn("netlink link subscription: list existing links", "err", err)
			listing = false
		}
		return func(typ uint16, body []byte) {
			if typ == unix.NLMSG_DONE && listing {
				listing = false
				if ready != nil {
					ready()
				}
				return
			}
			if (typ != unix.RTM_NEWLINK && typ != unix.RTM_DELLINK) || len(body) < unix.SizeofIfInfomsg {
				return
			}
			index := int32(binary.NativeEndian.Uint32(body[4:]))
			if typ == unix.RTM_DELLINK {
				delete(known, index)
				if !listing {
					wake("link")
				}
				return
			}
			now := seen{up: binary.NativeEndian.Uint32(body[8:])&unix.IFF_UP != 0}
			attrs(body[unix.SizeofIfInfomsg:], func(t uint16, v []byte) {
				switch {
				case t == unix.IFLA_IFNAME:
					now.name = string(trimNUL(v))
				case t == unix.IFLA_MTU && len(v) >= 4:
					now.mtu = binary.NativeEndian.Uint32(v)
				}
			})
			if old, had := known[index]; !had || old != now {
				known[index] = now
				if !listing {
					wake("link")
				}
			}
		}
	})
}

// watch keeps a subscription to groups open for ctx's life, handing each
// notification to the handler setup returns. A subscription that fails or
// loses notifications is reopened after resubscribe.Delay with a full
// resync (wake(resubscribe.Trigger)).
func watch(ctx context.Context, ns netns.NsHandle, what string, groups []int, wake resubscribe.Wake, log *slog.Logger,
	setup func(*subscription) func(typ uint16, body []byte)) {
	for ctx.Err() == nil {
		s, err := subscribe(ns, groups...)
		if err != nil {
			log.Error("netlink "+what+" subscription failed; retrying", "err", err)
			resubscribe.Sleep(ctx, resubscribe.Delay)
			continue
		}
		stop := context.AfterFunc(ctx, s.close)
		handle := setup(s)
		for {
			if err = s.read(handle); err != nil {
				break
			}
		}
		stop()
		s.close()
		if ctx.Err() == nil {
			log.Warn("netlink "+what+" subscription", "err", err)
			log.Warn("netlink " + what + " subscription closed; reopening with a full resync")
			wake(resubscribe.Trigger)
			resubscribe.Sleep(ctx, resubscribe.Delay)
		}
	}
}
