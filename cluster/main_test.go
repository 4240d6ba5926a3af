package cluster

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/pgrealtime/pgrealtime/internal/pgtest"
)

// The SIGKILL test runs this test binary again as a leader process: with
// helperEnv set it only takes the lock, says "leading" and blocks.
const (
	helperEnv     = "PGRT_CLUSTER_TEST_LEADER"
	helperURLEnv  = "PGRT_CLUSTER_TEST_URL"
	helperSlotEnv = "PGRT_CLUSTER_TEST_SLOT"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelperLeader())
	}
	pgtest.Main(m)
}

func runHelperLeader() int {
	e, err := New(Config{DatabaseURL: os.Getenv(helperURLEnv), Slot: os.Getenv(helperSlotEnv), NodeID: os.Getenv(helperEnv)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	_ = e.Run(context.Background(), func(ctx context.Context) error {
		fmt.Println("leading")
		<-ctx.Done()
		return nil
	})
	return 0
}
