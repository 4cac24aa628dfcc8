package firewall

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// tableContent is the part of a table that defines its behaviour, in a form
// both the spec and a kernel dump can be reduced to and compared.
type tableContent struct {
	missing bool
	// flags are the table's NFTA_TABLE_FLAGS: dormant switches every hook of
	// the table off while its rules still list, so they are behaviour too.
	flags  uint32
	chains []chainContent
	sets   []setContent
}

type chainContent struct {
	name string
	// base is true for a chain attached to a hook. A regular chain of the
	// same name and rules is never called.
	base     bool
	typ      nftables.ChainType
	hook     nftables.ChainHook
	priority int32
	policy   nftables.ChainPolicy
	rules    [][]expr.Any
}

type setContent struct {
	name  string
	isMap bool
	// flags are NFT_SET_* without NFT_SET_MAP (isMap says that): interval,
	// timeout and the like change what a lookup matches or how long an
	// element lives.
	flags    uint32
	timeout  time.Duration
	size     uint32
	keyType  string
	keyLen   uint32
	dataType string
	dataLen  uint32
	// elements maps hex(key) to hex(value) ("" for plain sets).
	elements map[string]string
}

// setContentOf reduces a set, built by a spec or parsed from a dump, to what
// is compared. Both sides go through the same function so a field the
// library does not parse cannot make them differ.
func setContentOf(s *nftables.Set, elems []nftables.SetElement) setContent {
	sc := setContent{name: s.Name, isMap: s.IsMap, flags: setFlags(s), size: s.Size,
		keyType: s.KeyType.Name, keyLen: s.KeyType.Bytes, elements: elementsOf(elems)}
	if s.HasTimeout {
		sc.timeout = s.Timeout
	}
	if s.IsMap {
		sc.dataType, sc.dataLen = s.DataType.Name, s.DataType.Bytes
	}
	return sc
}

// tableFlags returns the table's NFTA_TABLE_FLAGS. google/nftables v0.3.0
// decodes that big-endian attribute in host order, so on a little-endian
// host dormant (1) reads as 0x1000000: undo its decoding rather than trust it.
func tableFlags(t *nftables.Table) uint32 {
	return binary.BigEndian.Uint32(binary.NativeEndian.AppendUint32(nil, t.Flags))
}

// setFlags rebuilds NFT_SET_* (without NFT_SET_MAP) from the library's
// booleans, the only form in which it reports them.
func setFlags(s *nftables.Set) uint32 {
	var f uint32
	for _, b := range []struct {
		on   bool
		flag uint32
	}{
		{s.Anonymous, unix.NFT_SET_ANONYMOUS},
		{s.Constant, unix.NFT_SET_CONSTANT},
		{s.Interval, unix.NFT_SET_INTERVAL},
		{s.HasTimeout, unix.NFT_SET_TIMEOUT},
		{s.Dynamic, unix.NFT_SET_EVAL},
		{s.Concatenation, nftables.NFT_SET_CONCAT},
	} {
		if b.on {
			f |= b.flag
		}
	}
	// NFT_SET_CONCAT only selects the interval backend (pipapo) for
	// concatenated ranges; without interval it changes nothing, and nft
	// leaves it off where google/nftables sets it. Counting it would make a
	// table loaded from the rendered plan differ from Replace's.
	if f&unix.NFT_SET_INTERVAL == 0 {
		f &^= nftables.NFT_SET_CONCAT
	}
	return f
}

func (m *Manager) read(f Family) (tableContent, error) {
	ref := TableRef(f)
	tables, err := m.Conn.ListTablesOfFamily(f)
	if err != nil {
		return tableContent{}, fmt.Errorf("list %s tables: %w", FamilyName(f), err)
	}
	var t *nftables.Table
	for _, tt := range tables {
		if tt.Name == TableName {
			t = tt
		}
	}
	if t == nil {
		return tableContent{missing: true}, nil
	}
	got := tableContent{flags: tableFlags(t)}
	chains, err := m.Conn.ListChainsOfTableFamily(f)
	if err != nil {
		return got, fmt.Errorf("list chains of %s: %w", ref, err)
	}
	for _, c := range chains {
		if c.Table.Name != TableName {
			continue
		}
		cc := chainContent{name: c.Name, typ: c.Type, base: c.Hooknum != nil}
		if c.Hooknum != nil {
			cc.hook = *c.Hooknum
		}
		if c.Priority != nil {
			cc.priority = int32(*c.Priority)
		}
		if c.Policy != nil {
			cc.policy = *c.Policy
		}
		rules, err := m.Conn.GetRules(t, c)
		if err != nil {
			return got, fmt.Errorf("list rules of %s chain %s: %w", ref, c.Name, err)
		}
		for _, r := range rules {
			cc.rules = append(cc.rules, normalize(r.Exprs))
		}
		got.chains = append(got.chains, cc)
	}
	sets, err := m.Conn.GetSets(t)
	if err != nil {
		return got, fmt.Errorf("list sets of %s: %w", ref, err)
	}
	for _, s := range sets {
		elems, err := m.Conn.GetSetElements(s)
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return got, fmt.Errorf("list elements of %s set %s: %w", ref, s.Name, err)
		}
		got.sets = append(got.sets, setContentOf(s, elems))
	}
	return got, nil
}

// normalize drops what the kernel adds or varies (counter values, set IDs
// that exist only inside a transaction) so rules compare by behaviour.
func normalize(exprs []expr.Any) []expr.Any {
	out := make([]expr.Any, 0, len(exprs))
	for _, e := range exprs {
		switch v := e.(type) {
		case *expr.Counter:
			out = append(out, &expr.Counter{})
		case *expr.Lookup:
			c := *v
			c.SetID = 0
			out = append(out, &c)
		default:
			out = append(out, e)
		}
	}
	return out
}

// TableMissing is the difference of a table that is not there at all.
const TableMissing = "table missing"

// diff describes how got differs from want in a table of family f; ""
// means no difference. Each difference is named the way nft lists it
// ("chain input: hook output, want input") so an operator can see what was
// changed by hand.
func (got tableContent) diff(f Family, want tableContent) string {
	if got.missing {
		return TableMissing
	}
	var d []string
	if got.flags != want.flags {
		d = append(d, fmt.Sprintf("table flags %s, want %s", tableFlagNames(got.flags), tableFlagNames(want.flags)))
	}
	d = append(d, diffByName(got.chains, want.chains, func(c chainContent) (string, string) { return "chain", c.name },
		func(g, w chainContent) []string { return chainDiff(f, g, w) })...)
	d = append(d, diffByName(got.sets, want.sets, func(s setContent) (string, string) { return setKind(s.isMap), s.name }, setDiff)...)
	if len(d) == 0 {
		return ""
	}
	return "altered: " + strings.Join(d, "; ")
}

// diffByName matches the named parts of a table (chains, sets) by name:
// each wanted one missing or differing (by differ), in want's order, then
// each unexpected one, by name. id gives a part's kind ("chain", "set",
// "map") and name.
func diffByName[T any](got, want []T, id func(T) (kind, name string), differ func(g, w T) []string) []string {
	var d []string
	gotByName := map[string]T{}
	for _, g := range got {
		_, name := id(g)
		gotByName[name] = g
	}
	for _, w := range want {
		kind, name := id(w)
		g, ok := gotByName[name]
		delete(gotByName, name)
		if !ok {
			d = append(d, fmt.Sprintf("%s %s missing", kind, name))
			continue
		}
		for _, why := range differ(g, w) {
			d = append(d, fmt.Sprintf("%s %s: %s", kind, name, why))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(gotByName)) {
		kind, _ := id(gotByName[name])
		d = append(d, fmt.Sprintf("unexpected %s %s", kind, name))
	}
	return d
}

// chainDiff lists how chain g differs from w: its hook attachment, then its
// rules.
func chainDiff(f Family, g, w chainContent) []string {
	var d []string
	switch {
	case w.base && !g.base:
		// Nothing calls a regular chain: its rules are dead.
		d = append(d, fmt.Sprintf("regular chain, want type %s hook %s", w.typ, hookName(f, w.hook)))
	case !w.base && g.base:
		d = append(d, fmt.Sprintf("type %s hook %s, want a regular chain", g.typ, hookName(f, g.hook)))
	case w.base:
		if g.typ != w.typ {
			d = append(d, fmt.Sprintf("type %s, want %s", g.typ, w.typ))
		}
		if g.hook != w.hook {
			d = append(d, fmt.Sprintf("hook %s, want %s", hookName(f, g.hook), hookName(f, w.hook)))
		}
		if g.priority != w.priority {
			d = append(d, fmt.Sprintf("priority %s, want %s", priorityName(f, g.priority), priorityName(f, w.priority)))
		}
		if g.policy != w.policy {
			d = append(d, fmt.Sprintf("policy %s, want %s", policyName(g.policy), policyName(w.policy)))
		}
	}
	if len(g.rules) != len(w.rules) {
		return append(d, fmt.Sprintf("%d rules, want %d", len(g.rules), len(w.rules)))
	}
	for i := range w.rules {
		if why := ruleDiff(g.rules[i], normalize(w.rules[i])); why != "" {
			d = append(d, fmt.Sprintf("rule %d: %s", i+1, why))
		}
	}
	return d
}

// ruleDiff says how rule g differs from w ("" if it does not). A changed
// verdict is named; any other change is reported as such, since rendering
// arbitrary expressions back to nft syntax is nft's job.
func ruleDiff(g, w []expr.Any) string {
	if reflect.DeepEqual(g, w) {
		return ""
	}
	if len(g) == len(w) {
		for i := range w {
			if reflect.DeepEqual(g[i], w[i]) {
				continue
			}
			gv, gok := g[i].(*expr.Verdict)
			wv, wok := w[i].(*expr.Verdict)
			if gok && wok {
				return fmt.Sprintf("verdict %s, want %s", verdictName(gv), verdictName(wv))
			}
			break
		}
	}
	return "changed"
}

// setDiff lists how set g differs from w: its type and flags, then its
// elements (only when the types agree, else they cannot be compared).
func setDiff(g, w setContent) []string {
	var d []string
	if g.isMap != w.isMap {
		return append(d, fmt.Sprintf("a %s, want a %s", setKind(g.isMap), setKind(w.isMap)))
	}
	typesDiffer := false
	if g.keyType != w.keyType || g.keyLen != w.keyLen {
		d = append(d, fmt.Sprintf("key type %s, want %s", typeName(g.keyType, g.keyLen), typeName(w.keyType, w.keyLen)))
		typesDiffer = true
	}
	if g.dataType != w.dataType || g.dataLen != w.dataLen {
		d = append(d, fmt.Sprintf("data type %s, want %s", typeName(g.dataType, g.dataLen), typeName(w.dataType, w.dataLen)))
		typesDiffer = true
	}
	if g.flags != w.flags {
		d = append(d, fmt.Sprintf("flags %s, want %s", setFlagNames(g.flags), setFlagNames(w.flags)))
	}
	if g.timeout != w.timeout {
		d = append(d, fmt.Sprintf("timeout %s, want %s", durationName(g.timeout), durationName(w.timeout)))
	}
	if g.size != w.size {
		d = append(d, fmt.Sprintf("size %s, want %s", sizeName(g.size), sizeName(w.size)))
	}
	if typesDiffer {
		return d
	}
	var missing, extra, wrong int
	for k, v := range w.elements {
		gv, ok := g.elements[k]
		switch {
		case !ok:
			missing++
		case gv != v:
			wrong++
		}
	}
	for k := range g.elements {
		if _, ok := w.elements[k]; !ok {
			extra++
		}
	}
	if missing+extra+wrong > 0 {
		d = append(d, fmt.Sprintf("%d elements missing, %d unexpected, %d with wrong value", missing, extra, wrong))
	}
	return d
}

// elementsOf indexes set elements the way read does.
func elementsOf(elems []nftables.SetElement) map[string]string {
	out := make(map[string]string, len(elems))
	for _, e := range elems {
		k := hex.EncodeToString(e.Key)
		if len(e.KeyEnd) > 0 {
			k += "-" + hex.EncodeToString(e.KeyEnd)
		}
		if e.IntervalEnd {
			// An interval's end and the next one's start may share a key.
			k = "end:" + k
		}
		out[k] = hex.EncodeToString(e.Val)
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// sortedCopy returns a sorted copy so renderings and batches are stable.
func sortedCopy[T any](s []T, cmp func(a, b T) int) []T {
	c := slices.Clone(s)
	slices.SortFunc(c, cmp)
	return c
}
