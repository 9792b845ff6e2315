// The seed's workload: prints "Hello, World!" every second, forever.
#include <stdio.h>
#include <unistd.h>

int main(void) {
    for (;;) {
        printf("Hello, World!\n");
        fflush(stdout);
        sleep(1);
    }
}
