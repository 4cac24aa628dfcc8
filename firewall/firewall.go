// Package firewall owns dsr-agent's nftables tables: an arp filter table for
// the arptables mode, ip/ip6 nat tables for the firewalld mode and ip/ip6
// MSS-clamp tables for the tunnel mode (same names as the nat tables: the
// modes are exclusive). Each table
// is replaced atomically in one batch and compared with the kernel's copy to
// find hand edits: rules and elements, and also what switches a table off
// while its rules still list (table flags such as dormant, a chain's type,
// hook, priority or policy, a set's flags and types). Nothing outside tables
// named TableName is ever touched.
package firewall

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// ErrPermission reports that the nftables ruleset cannot be read without
// CAP_NET_ADMIN.
var ErrPermission = errors.New("permission denied")

// TableName is the name of every table dsr-agent owns (one per family).
const TableName = "dsr-agent"

// Family is one of the nftables families dsr-agent uses.
type Family = nftables.TableFamily

// The families, in the order plans list them.
var Families = []Family{nftables.TableFamilyARP, nftables.TableFamilyIPv4, nftables.TableFamilyIPv6}

// FamilyName is nft's spelling of the family.
func FamilyName(f Family) string {
	switch f {
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	}
	return fmt.Sprintf("family(%d)", f)
}

// ipFamily is the family of an ip or ip6 table (NATTable, MSSTable).
func ipFamily(v6 bool) Family {
	if v6 {
		return nftables.TableFamilyIPv6
	}
	return nftables.TableFamilyIPv4
}

// ipAddrType is the address type of an ip or ip6 table's sets; its Name is
// nft's ("ipv4_addr").
func ipAddrType(v6 bool) nftables.SetDatatype {
	if v6 {
		return nftables.TypeIP6Addr
	}
	return nftables.TypeIPAddr
}

// TableRef is "arp dsr-agent" and the like, as nft names a table.
func TableRef(f Family) string { return FamilyName(f) + " " + TableName }

// Spec is a desired table: what to build, how to render it, how to compare.
type Spec interface {
	Family() Family
	// Render returns the table in nft syntax (`nft -f` input).
	Render() string
	// build adds the table's chains, sets and rules to the pending batch.
	build(c *nftables.Conn, t *nftables.Table) error
	// expected returns the chains, sets and rules as the kernel reports them.
	expected() tableContent
}

// Manager changes and reads tables through one nftables connection (bound to
// a network namespace in tests).
type Manager struct {
	Conn *nftables.Conn
}

// Present lists which families have a dsr-agent table, in one dump.
func (m *Manager) Present() (map[Family]bool, error) {
	tables, err := m.Conn.ListTables()
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("list nftables tables: %w: reading nftables needs CAP_NET_ADMIN (run as root)", ErrPermission)
		}
		return nil, fmt.Errorf("list nftables tables: %w", err)
	}
	out := map[Family]bool{}
	for _, t := range tables {
		if t.Name == TableName {
			out[t.Family] = true
		}
	}
	return out, nil
}

// Replace swaps in the desired table in one transaction: delete the table
// if it exists, then add it with its full contents. Readers see the old
// table or the new one, never a half-built one. Deleting and re-creating
// (rather than flushing and refilling) is what clears what an operator may
// have set on the table itself: dormant, persist, a chain re-hooked, a set
// with other flags.
//
// Whether the table exists is read first: an "add table" on an existing one
// is an update of its flags, which the kernel refuses for persist
// (EOPNOTSUPP), so the batch must not touch an existing table before
// deleting it.
func (m *Manager) Replace(s Spec) error {
	f := s.Family()
	ref := TableRef(f)
	for attempt := 1; ; attempt++ {
		cur, err := m.lookup(f)
		if err != nil {
			return fmt.Errorf("replace table %s: %w", ref, err)
		}
		if err := owned(cur); err != nil {
			return fmt.Errorf("replace table %s: %w", ref, err)
		}
		if cur != nil {
			m.Conn.DelTable(&nftables.Table{Name: TableName, Family: f})
		}
		t := m.Conn.AddTable(&nftables.Table{Name: TableName, Family: f})
		if err := s.build(m.Conn, t); err != nil {
			return fmt.Errorf("build table %s: %w", ref, err)
		}
		err = m.Conn.Flush()
		if err == nil {
			return nil
		}
		// Someone created or deleted the table between the lookup and the
		// transaction (ENOENT on delete, EOPNOTSUPP on a flagged one):
		// look again, once.
		if attempt == 1 && m.existenceChanged(f, cur != nil) {
			continue
		}
		return fmt.Errorf("replace table %s: %w", ref, err)
	}
}

// Delete removes dsr-agent's table of the family; a missing one is fine.
// Like Replace it looks first instead of "add table" + "delete table": the
// add would be refused on a table flagged persist.
func (m *Manager) Delete(f Family) error {
	ref := TableRef(f)
	cur, err := m.lookup(f)
	if err != nil {
		return fmt.Errorf("delete table %s: %w", ref, err)
	}
	if cur == nil {
		return nil
	}
	if err := owned(cur); err != nil {
		return fmt.Errorf("delete table %s: %w", ref, err)
	}
	m.Conn.DelTable(&nftables.Table{Name: TableName, Family: f})
	if err := m.Conn.Flush(); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil // deleted by someone else meanwhile: the goal holds
		}
		return fmt.Errorf("delete table %s: %w", ref, err)
	}
	return nil
}

// lookup returns dsr-agent's table of family f as the kernel lists it, or
// nil when there is none.
func (m *Manager) lookup(f Family) (*nftables.Table, error) {
	tables, err := m.Conn.ListTablesOfFamily(f)
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("list %s tables: %w: reading nftables needs CAP_NET_ADMIN (run as root)", FamilyName(f), ErrPermission)
		}
		return nil, fmt.Errorf("list %s tables: %w", FamilyName(f), err)
	}
	for _, t := range tables {
		if t.Name == TableName {
			return t, nil
		}
	}
	return nil, nil
}

// existenceChanged reports whether the table's presence differs from
// existed, i.e. whether a failed transaction raced another writer.
func (m *Manager) existenceChanged(f Family, existed bool) bool {
	cur, err := m.lookup(f)
	return err == nil && (cur != nil) != existed
}

// owned refuses a table that another process owns (table flag owner): the
// kernel lets only the owning netlink socket change or delete it, and would
// answer a bare EPERM.
func owned(t *nftables.Table) error {
	if t == nil || tableFlags(t)&tableFlagOwner == 0 {
		return nil
	}
	return fmt.Errorf("the table is owned by another process (table flag owner), which alone can change it until it exits: %w", unix.EPERM)
}

// Diff compares the kernel's table with the spec. It returns "" when they
// match, otherwise what differs, phrased for an operator.
func (m *Manager) Diff(s Spec) (string, error) {
	got, err := m.read(s.Family())
	if err != nil {
		return "", err
	}
	return got.diff(s.Family(), s.expected()), nil
}

// RenderReplace is the nft script equivalent to Replace: one `nft -f`
// transaction, so it is atomic when run by hand too. Its leading "add
// table" (so the delete cannot fail on a missing table) also wakes a
// dormant table before the delete; only a table flagged persist, which
// nft 1.0.6 cannot make, refuses it (Replace itself looks first).
func RenderReplace(s Spec) string {
	ref := TableRef(s.Family())
	var b strings.Builder
	b.WriteString("nft -f - <<'EOF'\n")
	fmt.Fprintf(&b, "add table %s\ndelete table %s\n", ref, ref)
	b.WriteString(s.Render())
	b.WriteString("EOF\n")
	return b.String()
}

// RenderDelete is the nft command equivalent to Delete.
func RenderDelete(f Family) string { return "nft delete table " + TableRef(f) }

// batchBufferBytes is the send buffer forced on dsr-agent's nftables socket.
// A table replace is one batch in one sendmsg; with 10,000 VIPs it is far
// larger than the default socket buffer (nft itself forces SO_SNDBUFFORCE
// to the batch size for the same reason).
const batchBufferBytes = 64 << 20

// Dial opens an nftables connection to the namespace nsFD (-1: the
// caller's own) whose socket can send a whole large batch.
func Dial(nsFD int) (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.WithSockOptions(func(c *netlink.Conn) error {
		raw, err := c.SyscallConn()
		if err != nil {
			return err
		}
		return raw.Control(func(fd uintptr) {
			// Fails without CAP_NET_ADMIN (validate, dry-run as a user):
			// those send no batch, so the default buffer is fine.
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, batchBufferBytes)
			// The kernel acknowledges every message of the batch, and the
			// acknowledgements queue up until the batch is done: one rule
			// per IPv6 VIP (the Neighbour Solicitation guard) overflows the
			// default receive buffer at a few thousand VIPs (ENOBUFS).
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, batchBufferBytes)
		})
	})}
	if nsFD >= 0 {
		opts = append(opts, nftables.WithNetNSFd(nsFD))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables: %w", err)
	}
	return c, nil
}

// elementsPerMessage bounds one NEWSETELEM message: its element list is a
// netlink attribute, whose length field is 16 bits.
const elementsPerMessage = 1024

// addSet adds the set with its elements split over as many messages as the
// attribute size limit needs; all of them stay in the same transaction.
func addSet(c *nftables.Conn, s *nftables.Set, elems []nftables.SetElement) error {
	first := elems[:min(len(elems), elementsPerMessage)]
	if err := c.AddSet(s, first); err != nil {
		return err
	}
	for rest := elems[len(first):]; len(rest) > 0; {
		n := min(len(rest), elementsPerMessage)
		if err := c.SetAddElements(s, rest[:n]); err != nil {
			return err
		}
		rest = rest[n:]
	}
	return nil
}
