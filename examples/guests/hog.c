// Allocates memory 1 MiB at a time (touching it, and keeping every block reachable so
// the compiler cannot drop the allocations) until the host stops it.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *volatile head;

int main(void) {
    for (size_t total = 0;; total++) {
        char *p = malloc(1 << 20);
        if (!p) {
            printf("malloc failed after %zu MiB\n", total);
            return 3;
        }
        memset(p, 1, 1 << 20);
        *(void **)p = head;
        head = p;
    }
}
