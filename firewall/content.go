package firewall

import (
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// tableContent is the part of a table that defines its behaviour, in a form
// both the spec and a kernel dump can be reduced to and compared.
type tableContent struct {
	missing bool
	chains  []chainContent
	sets    []setContent
}

type chainContent struct {
	name     string
	typ      nftables.ChainType
	hook     nftables.ChainHook
	priority int32
	policy   nftables.ChainPolicy
	rules    [][]expr.Any
}

type setContent struct {
	name     string
	isMap    bool
	keyType  string
	dataType string
	// elements maps hex(key) to hex(value) ("" for plain sets).
	elements map[string]string
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
	var got tableContent
	chains, err := m.Conn.ListChainsOfTableFamily(f)
	if err != nil {
		return got, fmt.Errorf("list chains of %s: %w", ref, err)
	}
	for _, c := range chains {
		if c.Table.Name != TableName {
			continue
		}
		cc := chainContent{name: c.Name, typ: c.Type}
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
		sc := setContent{name: s.Name, isMap: s.IsMap, keyType: s.KeyType.Name, dataType: s.DataType.Name, elements: map[string]string{}}
		elems, err := m.Conn.GetSetElements(s)
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return got, fmt.Errorf("list elements of %s set %s: %w", ref, s.Name, err)
		}
		for _, e := range elems {
			sc.elements[hex.EncodeToString(e.Key)] = hex.EncodeToString(e.Val)
		}
		got.sets = append(got.sets, sc)
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

// diff describes how got differs from want; "" means no difference.
func (got tableContent) diff(want tableContent) string {
	if got.missing {
		return "table missing"
	}
	var d []string
	gotChains := map[string]chainContent{}
	for _, c := range got.chains {
		gotChains[c.name] = c
	}
	for _, w := range want.chains {
		g, ok := gotChains[w.name]
		delete(gotChains, w.name)
		if !ok {
			d = append(d, fmt.Sprintf("chain %s missing", w.name))
			continue
		}
		if g.typ != w.typ || g.hook != w.hook || g.priority != w.priority || g.policy != w.policy {
			d = append(d, fmt.Sprintf("chain %s: type, hook, priority or policy changed", w.name))
		}
		if len(g.rules) != len(w.rules) {
			d = append(d, fmt.Sprintf("chain %s: %d rules, want %d", w.name, len(g.rules), len(w.rules)))
			continue
		}
		for i := range w.rules {
			if !reflect.DeepEqual(g.rules[i], normalize(w.rules[i])) {
				d = append(d, fmt.Sprintf("chain %s: rule %d changed", w.name, i+1))
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(gotChains)) {
		d = append(d, fmt.Sprintf("unexpected chain %s", name))
	}
	gotSets := map[string]setContent{}
	for _, s := range got.sets {
		gotSets[s.name] = s
	}
	for _, w := range want.sets {
		g, ok := gotSets[w.name]
		delete(gotSets, w.name)
		if !ok {
			d = append(d, fmt.Sprintf("set %s missing", w.name))
			continue
		}
		if g.isMap != w.isMap || g.keyType != w.keyType || (w.isMap && g.dataType != w.dataType) {
			d = append(d, fmt.Sprintf("set %s: type changed", w.name))
			continue
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
			d = append(d, fmt.Sprintf("set %s: %d elements missing, %d unexpected, %d with wrong value", w.name, missing, extra, wrong))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(gotSets)) {
		d = append(d, fmt.Sprintf("unexpected set %s", name))
	}
	if len(d) == 0 {
		return ""
	}
	return "altered: " + strings.Join(d, "; ")
}

// elementsOf indexes set elements the way read does.
func elementsOf(elems []nftables.SetElement) map[string]string {
	out := make(map[string]string, len(elems))
	for _, e := range elems {
		out[hex.EncodeToString(e.Key)] = hex.EncodeToString(e.Val)
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
