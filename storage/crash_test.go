package storage

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/streamr"
)

var crashRounds = flag.Int("crash-rounds", 10, "kill -9 rounds in TestCrashKeepsAcknowledged (-long: 100)")

// crashChildEnv names the database directory of a crash test child.
const crashChildEnv = "TRIBUTARY_STORAGE_CRASH_DIR"

// TestCrashKeepsAcknowledged runs the pipeline in a child process (this
// test binary re-executed), kills it with SIGKILL at a random moment, and
// checks after reopening that every reading the child acknowledged is
// stored exactly once: as a pending reading or as a signed message.
func TestCrashKeepsAcknowledged(t *testing.T) {
	rounds := *crashRounds
	if *long {
		rounds = max(rounds, 100)
	}
	dir := t.TempDir()
	acked := map[string]bool{}
	for round := range rounds {
		n := crashRound(t, dir, round)
		for _, p := range n {
			acked[p] = true
		}
		checkStoredOnce(t, dir, acked)
	}
	t.Logf("%d rounds, %d acknowledged readings, all stored exactly once", rounds, len(acked))
}

// crashRound starts a child, lets it run a random time and kills it. It
// returns the payloads the child acknowledged.
func crashRound(t *testing.T, dir string, round int) []string {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, fmt.Sprintf("TRIBUTARY_STORAGE_CRASH_ROUND=%d", round))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killAt := time.Duration(20+rand.IntN(300)) * time.Millisecond
	var acked []string
	sc := bufio.NewScanner(out)
	var killOnce sync.Once
	kill := func() { _ = cmd.Process.Signal(syscall.SIGKILL) }
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "ack "); ok {
			acked = append(acked, p)
		}
		if line == "ready" {
			time.AfterFunc(killAt, func() { killOnce.Do(kill) })
		}
	}
	killOnce.Do(kill)
	_ = cmd.Wait()
	if len(acked) == 0 && round == 0 {
		t.Fatalf("round %d: child acknowledged nothing in %s", round, killAt)
	}
	return acked
}

func checkStoredOnce(t *testing.T, dir string, acked map[string]bool) {
	t.Helper()
	s, err := Open(Options{Dir: dir, MinFreeBytes: -1})
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer s.Close()
	seen := map[string]int{}
	pend, err := s.Pending(0, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range pend {
		seen[string(r.Payload)]++
	}
	logged, err := s.After(0, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	refs := map[string]bool{}
	for _, l := range logged {
		m, err := streamr.Unmarshal(l.Encoded)
		if err != nil {
			t.Fatal(err)
		}
		seen[string(m.Content().Content)]++
		ref := fmt.Sprintf("%s/%s/%v", m.ID.StreamPart(), m.ID.MsgChainID, m.ID.Ref())
		if refs[ref] {
			t.Fatalf("message reference %s issued twice: a chain state went backwards", ref)
		}
		refs[ref] = true
		checkChainCovers(t, s, m.ID)
	}
	for p, n := range seen {
		if n != 1 {
			t.Fatalf("reading %q stored %d times", p, n)
		}
	}
	for p := range acked {
		if seen[p] != 1 {
			t.Fatalf("acknowledged reading %q lost", p)
		}
	}
}

// checkChainCovers fails unless the stored state of id's chain (the
// test's chain IDs are the sources) is at or after id: a chain restored
// from it never reissues a reference.
func checkChainCovers(t *testing.T, s *Store, id streamr.MessageID) {
	t.Helper()
	st, ok, err := s.ChainState(id.StreamPart().String() + "\x00" + id.MsgChainID)
	if err != nil || !ok || st.Last == nil {
		t.Fatalf("chain %s of message %v: state %v, %v (err %v)", id.MsgChainID, id.Ref(), st, ok, err)
	}
	if ref := (streamr.MessageRef{Timestamp: id.Timestamp, SequenceNumber: id.SequenceNumber}); st.Last.Compare(ref) < 0 {
		t.Fatalf("chain %s: stored state at %v, behind its logged message %v", id.MsgChainID, *st.Last, ref)
	}
}

// crashChild is the child's main: writers appending durably and printing
// "ack <payload>" once Append returns, and a signer moving readings to
// signed messages, until it is killed.
func crashChild() int {
	s, err := Open(Options{Dir: os.Getenv(crashChildEnv), MinFreeBytes: -1, MaxBatch: 64})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		return 1
	}
	round := os.Getenv("TRIBUTARY_STORAGE_CRASH_ROUND")
	// Odd rounds sign in the group commit too (Presigner), even ones only
	// behind it; both share one chain cache, as the bridge's signer does.
	n, _ := strconv.Atoi(round)
	p := &testPresigner{s: s, chains: map[string]*streamr.Chain{}, decline: n%2 == 0}
	s.SetPresigner(p)
	go func() { _ = s.Run(context.Background()) }()
	go childSigner(s, p)
	for !p.decline && s.pending.Load() > 0 {
		time.Sleep(time.Millisecond) // the backlog first, so that this round presigns
	}
	fmt.Println("ready")
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				r := reading(testPart, fmt.Sprintf("w%d", w), fmt.Sprintf("r%s-w%d-%d", round, w, i))
				if err := s.Append(context.Background(), r, true); err != nil {
					fmt.Fprintln(os.Stderr, "crash child append:", err)
					return
				}
				fmt.Println("ack " + string(r.Payload))
			}
		})
	}
	wg.Wait()
	return 1
}

func childSigner(s *Store, p *testPresigner) {
	var after uint64
	for {
		pend, err := s.Pending(after, 100)
		if err != nil || len(pend) == 0 {
			time.Sleep(time.Millisecond)
			continue
		}
		p.mu.Lock()
		msgs, states := childSign(s, pend, p.chains)
		err = s.CommitSigned(context.Background(), msgs, states)
		p.mu.Unlock()
		if err != nil {
			fmt.Fprintln(os.Stderr, "crash child sign:", err)
			return
		}
		after = pend[len(pend)-1].Seq
	}
}

func childSign(s *Store, pend []Reading, chains map[string]*streamr.Chain) ([]Signed, map[string]streamr.ChainState) {
	msgs := make([]Signed, len(pend))
	states := map[string]streamr.ChainState{}
	for i, r := range pend {
		key := r.Part.String() + "\x00" + r.Source
		c := chains[key]
		if c == nil {
			if st, ok, _ := s.ChainState(key); ok {
				c, _ = streamr.RestoreChain(st)
			} else {
				c = streamr.NewChain(r.Source)
			}
			chains[key] = c
		}
		ref, prev := c.Next(r.ReceivedAt)
		msgs[i], _ = buildSigned(r, ref.Timestamp, ref.SequenceNumber, prev) // marshals a valid message
		states[key] = c.State()
	}
	return msgs, states
}
