package route

import (
	"context"
	"log/slog"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/resubscribe"
)

// Watch wakes with "route" when a rule or route carrying dsr-agent's mark is
// added or deleted (`ip rule del`, `ip route flush table N`, a network
// manager rewriting the policy database), and for any rule: a foreign one
// may take return_via's replies before dsr-agent's (rules change rarely;
// routes of others, which change often, do not wake it). A link going down takes its IPv4 routes with it without a
// notification; the link watcher covers that.
func Watch(ctx context.Context, wake resubscribe.Wake, log *slog.Logger) {
	resubscribe.Netlink{What: "rule/route", Groups: watchGroups, Match: ours, Trigger: "route"}.Run(ctx, wake, log)
}

// watchGroups are the rtnetlink groups Watch listens to.
var watchGroups = []uint{unix.RTNLGRP_IPV4_RULE, unix.RTNLGRP_IPV6_RULE, unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE}

// ours reports whether a message wakes the watcher: a rule, or a route
// carrying dsr-agent's mark (in the rtmsg header).
func ours(typ uint16, data []byte) bool {
	switch typ {
	case unix.RTM_NEWRULE, unix.RTM_DELRULE:
		return true
	case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
		return len(data) >= unix.SizeofRtMsg && nl.DeserializeRtMsg(data).Protocol == Proto
	}
	return false
}
