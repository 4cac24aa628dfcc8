package firewall

import (
	"context"
	"log/slog"
	"os"

	"github.com/google/nftables"

	"github.com/dsr-agent/dsr-agent/internal/resubscribe"
)

// Watch wakes with "nftables" when another process changes a dsr-agent
// table (flush, delete, rule or set edit, flags such as dormant). Changes
// to other tables are not ours to fight over and are ignored; batches
// committed by this process (its own repairs) are recognised by the
// generation message's PID and ignored.
func Watch(ctx context.Context, wake resubscribe.Wake, log *slog.Logger) {
	self := uint32(os.Getpid())
	for ctx.Err() == nil {
		conn, err := nftables.New()
		if err != nil {
			log.Error("nftables connection failed; retrying", "err", err)
			resubscribe.Sleep(ctx, resubscribe.Delay)
			continue
		}
		mon := nftables.NewMonitor(nftables.WithMonitorEventBuffer(64))
		ch, err := conn.AddGenerationalMonitor(mon)
		if err != nil {
			log.Error("nftables monitor failed; retrying", "err", err)
			resubscribe.Sleep(ctx, resubscribe.Delay)
			continue
		}
		func() {
			defer mon.Close()
			for {
				select {
				case <-ctx.Done():
					return
				case evs, ok := <-ch:
					if !ok {
						return
					}
					if evs.GeneratedBy != nil && evs.GeneratedBy.Type == nftables.MonitorEventTypeOOB {
						log.Warn("nftables monitor error", "err", evs.GeneratedBy.Error)
						continue // the channel closes next
					}
					if gen, ok := evs.GeneratedBy.Data.(*nftables.GenMsg); ok && gen.ProcPID == self {
						continue
					}
					if touchesOwned(evs.Changes) {
						wake("nftables")
					}
				}
			}
		}()
		if ctx.Err() == nil {
			log.Warn("nftables monitor closed; reopening with a full resync")
			wake(resubscribe.Trigger)
			resubscribe.Sleep(ctx, resubscribe.Delay)
		}
	}
}

// touchesOwned reports whether a batch may have changed a dsr-agent table.
// A table update such as `nft add table arp dsr-agent '{ flags dormant; }'`
// arrives as NFT_MSG_NEWTABLE with the table's name, and chain and set
// changes carry their table, so all of them wake the loop. Set-element
// events do not carry their table's name, so they count (a flushed VIP set
// must be noticed); a spurious pass is a no-op.
func touchesOwned(changes []*nftables.MonitorEvent) bool {
	for _, e := range changes {
		var table *nftables.Table
		switch d := e.Data.(type) {
		case *nftables.Table:
			table = d
		case *nftables.Chain:
			table = d.Table
		case *nftables.Rule:
			table = d.Table
		case *nftables.Set:
			table = d.Table
		case []nftables.SetElement:
			return true
		}
		if table == nil || table.Name == TableName {
			return true
		}
	}
	return false
}
