// An idle guest: sleeps for an hour (for the idle-guest memory benchmark).
#include <unistd.h>

int main(void) {
    sleep(3600);
    return 0;
}
