package anyip

import (
	"context"
	"log/slog"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/resubscribe"
	"github.com/dsr-agent/dsr-agent/route"
)

// Trigger is the wake reason: an AnyIP route of dsr-agent's was added or
// deleted (`ip route del local …`, `ip route flush table local`).
const Trigger = "prefix"

// Watch wakes with Trigger for route notifications of table local that
// carry dsr-agent's mark, and with resubscribe.Trigger when the
// subscription had to be reopened (events may have been lost). The kernel's
// own local routes (every address add and delete makes one) and others'
// do not wake it. route.Watch wakes too for these routes (it takes every
// route with the mark, in any table): a daemon that runs both may drop
// either, a wake is only a reason to re-read.
func Watch(ctx context.Context, wake resubscribe.Wake, log *slog.Logger) {
	resubscribe.Netlink{What: "local route", Groups: []uint{unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE},
		Match: Ours, Trigger: Trigger}.Run(ctx, wake, log)
}

// Ours reports whether a route notification is one of dsr-agent's AnyIP
// routes: table local, type local, dsr-agent's mark, all in the rtmsg
// header (table local is 255 and fits rtm_table, so no attribute parse).
func Ours(typ uint16, data []byte) bool {
	if typ != unix.RTM_NEWROUTE && typ != unix.RTM_DELROUTE {
		return false
	}
	if len(data) < unix.SizeofRtMsg {
		return false
	}
	h := nl.DeserializeRtMsg(data)
	return h.Protocol == route.Proto && h.Table == Table && h.Type == unix.RTN_LOCAL
}
