package statuspage

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
)

// maxDocument bounds a /status document read by Fetch.
const maxDocument = 16 << 20

// Fetch reads the /status document of the gateway whose HTTP API is at
// base (http://host:port): decoded, and as received.
func Fetch(ctx context.Context, client *http.Client, base, apiKey string) (Status, []byte, error) {
	url := strings.TrimSuffix(base, "/") + "/status"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Status{}, nil, err
	}
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	resp, err := client.Do(req)
	if err != nil {
		return Status{}, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument))
	if err != nil {
		return Status{}, nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return Status{}, nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body[:min(len(body), 512)])))
	}
	var st Status
	if err := json.Unmarshal(body, &st); err != nil {
		return Status{}, nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if st.SchemaVersion != SchemaVersion {
		return st, body, fmt.Errorf("GET %s: status schema version %d, this bridge reads %d", url, st.SchemaVersion, SchemaVersion)
	}
	return st, body, nil
}

// WriteText writes st as `bridge status` prints it: health first, so the
// first line answers whether the gateway is fine.
func WriteText(w io.Writer, st Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	health := strings.ToUpper(st.Health.State)
	if st.Health.Error != "" {
		health += ": " + st.Health.Error
	}
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, a...)...) }
	row("health", "%s", health)
	row("publisher", "%s (%s, %s key)", st.Identity.Publisher, st.Identity.KeyType, st.Identity.KeyBackend)
	if st.Identity.PeerID != "" {
		row("peer ID", "%s", st.Identity.PeerID)
	}
	row("clock", "%s", clockText(st.Clock))
	row("uptime", "%s (version %s)", (time.Duration(st.UptimeSeconds) * time.Second).String(), st.Version)
	row("mqtt clients", "%d", st.MQTT.Clients)
	row("readings", "%d in (%.1f/s), %d signed, rejected: %s", st.Readings.In, st.Readings.RatePerSecond, st.Readings.Signed, countsText(st.Readings.Rejected))
	row("storage", "%s of %s quota, %s free on disk, %d unsigned", humanize.IBytes(uint64(max(st.Storage.UsedBytes, 0))),
		humanize.IBytes(uint64(max(st.Storage.QuotaBytes, 0))), humanize.IBytes(uint64(max(st.Storage.FreeBytes, 0))), st.Storage.PendingReadings)
	if f := st.Forward; f != nil {
		row("forward backlog", "%d messages%s", f.BacklogMessages, drainText(f))
	}
	if o := st.Overlay; o != nil {
		row("overlay", "%d peers connected, %d penalised", o.ConnectedPeers, o.PenalisedPeers)
	}
	row("streamr network", "%s", proxiesText(st.StreamrNetwork))
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Partitions) == 0 {
		_, err := fmt.Fprintln(w, "\nno stream partitions yet")
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM PARTITION\tROLES\tMSG/S\tLAST MESSAGE\tPEERS\tNEIGHBOURS\tIN\tOUT")
	for _, p := range st.Partitions {
		last := "none"
		if p.LastMessage != nil {
			last = st.Time.Sub(*p.LastMessage).Round(time.Second).String() + " ago"
		}
		if p.HeldSince != nil {
			last += ", held for peers"
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%s\t%d\t%d\t%d\t%d\n", p.ID, strings.Join(p.Roles, ","), p.RatePerSecond, last, p.Peers, p.Neighbours, p.MessagesIn, p.MessagesOut)
	}
	return tw.Flush()
}

func clockText(c Clock) string {
	switch {
	case c.Error != "":
		return "sync state unknown: " + c.Error
	case c.SigningHeld:
		return "NOT synchronised: signing held (signing.on_unsynced_clock = \"hold\")"
	case !c.Synced:
		return fmt.Sprintf("NOT synchronised (max error %s)", time.Duration(c.MaxErrorSeconds*float64(time.Second)).Round(time.Millisecond))
	}
	return fmt.Sprintf("synchronised (max error %s)", time.Duration(c.MaxErrorSeconds*float64(time.Second)).Round(time.Millisecond))
}

func drainText(f *Forward) string {
	d := f.Drain
	switch {
	case d == nil && f.HoldingBack:
		return ", held for want of peers"
	case d == nil:
		return ""
	case d.ETASeconds == nil:
		return fmt.Sprintf(", %.0f%% of %d forwarded, not shrinking", d.Percent, d.Peak)
	}
	return fmt.Sprintf(", %.0f%% of %d forwarded at %.0f/s, ETA %s", d.Percent, d.Peak, d.RatePerSecond, (time.Duration(*d.ETASeconds) * time.Second).String())
}

func proxiesText(n StreamrNetwork) string {
	if !n.Configured {
		return "not configured"
	}
	if len(n.Proxies) == 0 {
		return "configured, no proxies"
	}
	parts := make([]string, len(n.Proxies))
	for i, p := range n.Proxies {
		parts[i] = p.URL + " " + p.State
	}
	return strings.Join(parts, "; ")
}

func countsText(m map[string]uint64) string {
	var parts []string
	for k, n := range m {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, n))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// WritePeers writes the nodes st knows, as `bridge peers` prints them.
func WritePeers(w io.Writer, st Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	n := 0
	for _, node := range st.Nodes {
		if node.Kind == "self" {
			continue
		}
		if n++; n == 1 {
			fmt.Fprintln(tw, "NODE\tKIND\tCONNECTED\tSCORE\tSTREAM PARTITIONS\tADDRESSES")
		}
		connected := "no"
		if node.Connected {
			connected = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\t%s\t%s\n", node.ID, node.Kind, connected, node.Score, orDash(strings.Join(node.Partitions, ",")), orDash(strings.Join(node.Addrs, " ")))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if n == 0 {
		msg := "no peers: the overlay is disabled"
		if st.Overlay != nil {
			msg = "no peers known yet (bootstrap peers unreachable, or none configured and none found on the LAN)"
		}
		_, err := fmt.Fprintln(w, msg)
		return err
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
