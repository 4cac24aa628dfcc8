package tunnel

import (
	"encoding/binary"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// fouAdd is `ip fou add port P gue`, sent the way iproute2 sends it: port,
// family and type, no FOU_ATTR_IPPROTO. vishvananda/netlink v1.3.1's FouAdd
// always sends FOU_ATTR_IPPROTO (0 for GUE), and kernels with the policy
// NLA_POLICY_MIN(NLA_U8, 1) on that attribute (stable backports, e.g.
// Debian's 6.1.0-50) reject the request with ERANGE ("numerical result out
// of range"). The request goes on a generic netlink socket opened in ns (the
// namespace h is bound to; netns.None() for the caller's).
func fouAdd(ns netns.NsHandle, k FouKey) error {
	famID, err := netlink.FouFamilyId()
	if err != nil {
		return fmt.Errorf("resolve the fou netlink family: %w", err)
	}
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_GENERIC)
	if err != nil {
		return fmt.Errorf("generic netlink socket: %w", err)
	}
	defer s.Close()
	req := nl.NewNetlinkRequest(famID, unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_GENERIC: {Socket: s}}
	port := make([]byte, 2)
	binary.BigEndian.PutUint16(port, k.Port)
	raw := []byte{netlink.FOU_CMD_ADD, 1, 0, 0} // genlmsghdr: cmd, version 1
	for _, a := range []*nl.RtAttr{
		nl.NewRtAttr(netlink.FOU_ATTR_PORT, port),
		nl.NewRtAttr(netlink.FOU_ATTR_AF, []byte{uint8(k.af())}),
		nl.NewRtAttr(netlink.FOU_ATTR_TYPE, []byte{netlink.FOU_ENCAP_GUE}),
	} {
		raw = append(raw, a.Serialize()...)
	}
	req.AddRawData(raw)
	_, err = req.Execute(unix.NETLINK_GENERIC, 0)
	return err
}
