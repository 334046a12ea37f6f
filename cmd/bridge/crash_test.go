package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/streamr"
)

var crashRounds = flag.Int("crash-rounds", 20, "kill -9 rounds in TestCrashKill9 (200 for the long run)")

const crashPublishers = 4

// TestCrashKill9 loads the real binary with QoS 1 publishers, kills it with
// SIGKILL at random moments and, after each kill, proves with `bridge
// export` of the stopped gateway (which signs what was stored but not yet
// signed) that every PUBACKed reading so far is present exactly once,
// correctly signed, with contiguous chains. The next round's run continues
// those chains; at the end a running gateway exports them all again.
func TestCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test runs the real binary for many rounds")
	}
	// Even rounds sign behind the durable write, where a wide signing
	// window leaves many durable readings unsigned at each kill; odd rounds
	// sign in the commit that stores them (the default with a software key).
	in := newInstance(t, "[signing]\nbatch_window = \"200ms\"\nsign_in_commit_under = \"0s\"\n")
	acked := make(map[string]bool)
	var nextID, signedByExport int
	var stream string
	for round := range *crashRounds {
		in.replaceConfig(`sign_in_commit_under = "[^"]*"`, fmt.Sprintf("sign_in_commit_under = %q", []string{"0s", "2ms"}[round%2]))
		in.start()
		ids := publishUntilKilled(t, in, round, &nextID)
		for _, id := range ids {
			acked[id] = true
		}
		if stream == "" {
			stream = in.address() + "/crash/data"
		}
		msgs, stderr, code := in.exportAll(stream)
		if code != 0 {
			t.Fatalf("round %d: export after kill -9: exit status %d\n%s", round, code, stderr)
		}
		signedByExport += exportSigned(t, stderr)
		checkExport(t, msgs, acked, publishersOf(acked))
		if t.Failed() {
			t.Fatalf("round %d: export after kill -9 is incomplete\n%s", round, stderr)
		}
	}
	if len(acked) == 0 || signedByExport == 0 {
		t.Fatalf("%d readings acknowledged, %d signed by export: the test proves nothing", len(acked), signedByExport)
	}
	in.start()
	msgs := waitForExport(t, in, stream, len(acked))
	in.stop()
	checkExport(t, msgs, acked, crashPublishers)
	t.Logf("%d rounds, %d readings acknowledged, %d signed by export after a kill, %d messages exported",
		*crashRounds, len(acked), signedByExport, len(msgs))
}

// exportSigned returns how many readings `bridge export` said it signed.
func exportSigned(t *testing.T, stderr string) int {
	t.Helper()
	m := regexp.MustCompile(`export: signed (\d+) readings`).FindStringSubmatch(stderr)
	if m == nil {
		return 0
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// publishersOf counts the publishers with an acknowledged reading: each
// has one chain.
func publishersOf(acked map[string]bool) int {
	pubs := make(map[string]bool)
	for id := range acked {
		parts := strings.Split(id, "-") // r<start>-p<publisher>-<i>
		pubs[parts[1]] = true
	}
	return len(pubs)
}

// publishUntilKilled runs publishers against in and kills the bridge after
// a random delay. It returns the IDs of acknowledged readings.
func publishUntilKilled(t *testing.T, in *instance, round int, nextID *int) []string {
	var (
		mu    sync.Mutex
		ids   []string
		wg    sync.WaitGroup
		start = *nextID
	)
	*nextID += 1_000_000 // disjoint ID ranges per round
	stop := make(chan struct{})
	for p := range crashPublishers {
		client := connect(t, in.mqtt, fmt.Sprintf("pub-%d", p))
		wg.Go(func() {
			defer client.Disconnect(0)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("r%d-p%d-%d", start, p, i)
				payload, _ := json.Marshal(map[string]any{"id": id, "round": round})
				tok := client.Publish("crash/data", 1, false, payload)
				if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
					return // the broker died under us
				}
				mu.Lock()
				ids = append(ids, id)
				mu.Unlock()
			}
		})
	}
	time.Sleep(time.Duration(50+rand.IntN(400)) * time.Millisecond)
	in.kill()
	close(stop)
	wg.Wait()
	return ids
}

func connect(t testing.TB, addr, clientID string) mqtt.Client {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetWriteTimeout(5 * time.Second).SetConnectTimeout(5 * time.Second)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s to %s: %v", clientID, addr, tok.Error())
	}
	return c
}

// waitForExport polls `bridge export` until it holds at least want
// messages and the count is stable.
func waitForExport(t *testing.T, in *instance, stream string, want int) []*streamr.StreamMessage {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	prev := -1
	for {
		msgs := in.export(stream)
		if len(msgs) >= want && len(msgs) == prev {
			return msgs
		}
		if time.Now().After(deadline) {
			t.Logf("export holds %d messages, %d acknowledged readings", len(msgs), want)
			return msgs
		}
		prev = len(msgs)
		time.Sleep(300 * time.Millisecond)
	}
}

// checkExport verifies signatures, exactly-once presence of every
// acknowledged reading, and that each chain is contiguous.
func checkExport(t *testing.T, msgs []*streamr.StreamMessage, acked map[string]bool, wantChains int) {
	t.Helper()
	seen := make(map[string]int)
	chains := make(map[string][]*streamr.StreamMessage)
	for _, m := range msgs {
		if err := streamr.Validate(m, 0, streamr.Limits{}); err != nil {
			t.Errorf("invalid message: %v", err)
			continue
		}
		var body struct{ ID string }
		if err := json.Unmarshal(m.Content().Content, &body); err != nil {
			t.Errorf("content %q: %v", m.Content().Content, err)
			continue
		}
		seen[body.ID]++
		chains[m.ID.MsgChainID] = append(chains[m.ID.MsgChainID], m)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("reading %s present %d times", id, n)
		}
	}
	missing := 0
	for id := range acked {
		if seen[id] == 0 {
			missing++
			if missing <= 10 {
				t.Errorf("acknowledged reading %s is missing", id)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acknowledged readings missing", missing, len(acked))
	}
	if len(chains) != wantChains {
		t.Errorf("got %d chains, want one per publisher client ID (%d)", len(chains), wantChains)
	}
	for id, chain := range chains {
		checkChain(t, id, chain)
	}
}

func checkChain(t *testing.T, id string, chain []*streamr.StreamMessage) {
	t.Helper()
	sort.Slice(chain, func(i, j int) bool { return chain[i].ID.Ref().Compare(chain[j].ID.Ref()) < 0 })
	if chain[0].PrevMsgRef != nil {
		t.Errorf("chain %s: first message %s has a previous reference %s", id, chain[0].ID.Ref(), chain[0].PrevMsgRef)
	}
	for i := 1; i < len(chain); i++ {
		prev, want := chain[i].PrevMsgRef, chain[i-1].ID.Ref()
		if prev == nil || *prev != want {
			t.Errorf("chain %s: message %s points to %v, want %s", id, chain[i].ID.Ref(), prev, want)
			return
		}
	}
}
