/* A small C host that embeds Lua 5.4 with prefect.core linked in statically,
 * and runs a Lua script in a simulated 60 fps frame loop, the way a game or a
 * tool would. It measures every frame and reports the worst one, so it shows
 * whether reading task runs ever stalls the loop.
 *
 * usage: host [--budget-ms MS] [--max-frame-ms MS] [--max-seconds S] SCRIPT [ARGS...]
 *
 * The script runs once at start-up (its ARGS are `...`) and returns a table:
 *   app.frame(frame_number, now)  called once a frame; returns true when finished
 *   app.report()                  after the loop: a table with
 *                                 { received = n, expected = n, distinct = n, error = msg|nil }
 * The host gives the script a module `host` with `host.now()` (monotonic seconds)
 * and `host.budget` (seconds per frame).
 *
 * The loop first runs one second of empty frames (how steady the loop is on
 * this machine without the query), then the script's frames. A frame's time
 * is from its start to the next frame's start; --max-frame-ms (default: the
 * budget + 5 ms) is the bound checked while the query is in flight.
 *
 * Prints the figures, one "ok"/"FAILED" line per check and "N passed, N failed";
 * exits 1 when a check failed, 2 on a usage or start-up error. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

/* The C core's entry point (csrc/core.c), linked into this program. */
int luaopen_prefect_core(lua_State *L);

struct frame_stats {
    long frames;
    double worst_period; /* seconds between the starts of two frames */
    double worst_work;   /* seconds spent in app.frame */
    double sum_period;
    int finished; /* app.frame returned true */
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_until(double when)
{
    struct timespec ts;
    ts.tv_sec = (time_t)when;
    ts.tv_nsec = (long)((when - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static int host_now(lua_State *L)
{
    lua_pushnumber(L, now_seconds());
    return 1;
}

static double frame_budget = 1.0 / 60.0;

static int luaopen_host(lua_State *L)
{
    static const luaL_Reg functions[] = {{"now", host_now}, {NULL, NULL}};
    luaL_newlib(L, functions);
    lua_pushnumber(L, frame_budget);
    lua_setfield(L, -2, "budget");
    return 1;
}

/* Registers the statically linked modules: `require` finds them in
 * package.loaded and never searches package.cpath for them. */
static void open_modules(lua_State *L)
{
    luaL_openlibs(L);
    luaL_requiref(L, "prefect.core", luaopen_prefect_core, 0);
    lua_pop(L, 1);
    luaL_requiref(L, "host", luaopen_host, 0);
    lua_pop(L, 1);
}

/* A message handler that adds a traceback, for errors in the script. */
static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL)
        msg = luaL_tolstring(L, 1, NULL);
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static int call(lua_State *L, int nargs, int nresults)
{
    int base = lua_gettop(L) - nargs;
    int status;
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    status = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);
    return status;
}

static int passed, failed;

static void check(int ok, const char *what)
{
    if (ok)
        passed++;
    else
        failed++;
    printf("%s %s\n", ok ? "ok    " : "FAILED", what);
}

static long field_integer(lua_State *L, int idx, const char *name)
{
    long v;
    lua_getfield(L, idx, name);
    v = (long)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return v;
}

/* Runs frames until app.frame (the function in field "frame" of the table at
 * index `app`; none when `app` is 0) returns true, or `max_frames` frames.
 * Returns 0, or -1 after printing the error the script raised. */
static int run_frames(lua_State *L, int app, long max_frames, struct frame_stats *stats)
{
    double next = now_seconds(), last_start = 0.0;
    memset(stats, 0, sizeof *stats);
    while (!stats->finished && stats->frames < max_frames) {
        double frame_start, work;
        sleep_until(next);
        frame_start = now_seconds();
        if (stats->frames > 0) {
            double period = frame_start - last_start;
            stats->sum_period += period;
            if (period > stats->worst_period)
                stats->worst_period = period;
        }
        last_start = frame_start;
        if (app != 0) {
            lua_getfield(L, app, "frame");
            lua_pushinteger(L, stats->frames + 1);
            lua_pushnumber(L, frame_start);
            if (call(L, 2, 1) != LUA_OK) {
                fprintf(stderr, "host: frame %ld: %s\n", stats->frames + 1, lua_tostring(L, -1));
                return -1;
            }
            stats->finished = lua_toboolean(L, -1);
            lua_pop(L, 1);
        }
        work = now_seconds() - frame_start;
        if (work > stats->worst_work)
            stats->worst_work = work;
        stats->frames++;
        /* The next frame is due one budget after this one started; a frame
         * that ran late does not make the next ones hurry to catch up. */
        next = frame_start + frame_budget;
    }
    if (!stats->finished && app != 0)
        fprintf(stderr, "host: the script did not finish in %ld frames\n", max_frames);
    return 0;
}

static void print_stats(const char *what, const struct frame_stats *stats)
{
    printf("%s: worst frame %.1f ms, mean %.1f ms; worst time in app.frame %.1f ms\n", what,
           stats->worst_period * 1000.0,
           stats->frames > 1 ? stats->sum_period * 1000.0 / (double)(stats->frames - 1) : 0.0,
           stats->worst_work * 1000.0);
}

static int usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s [--budget-ms MS] [--max-frame-ms MS] [--max-seconds S] SCRIPT [ARGS...]\n",
            prog);
    return 2;
}

int main(int argc, char **argv)
{
    double max_frame = 0.0, max_seconds = 60.0, start;
    struct frame_stats idle, busy;
    int argi = 1, nargs, finished, app;
    lua_State *L;
    char what[160];

    while (argi < argc && strncmp(argv[argi], "--", 2) == 0) {
        if (argi + 1 >= argc)
            return usage(argv[0]);
        if (strcmp(argv[argi], "--budget-ms") == 0)
            frame_budget = atof(argv[argi + 1]) / 1000.0;
        else if (strcmp(argv[argi], "--max-frame-ms") == 0)
            max_frame = atof(argv[argi + 1]) / 1000.0;
        else if (strcmp(argv[argi], "--max-seconds") == 0)
            max_seconds = atof(argv[argi + 1]);
        else
            return usage(argv[0]);
        argi += 2;
    }
    if (argi >= argc || frame_budget <= 0.0 || max_seconds <= 0.0)
        return usage(argv[0]);
    if (max_frame <= 0.0)
        max_frame = frame_budget + 0.005;

    L = luaL_newstate();
    if (L == NULL) {
        fprintf(stderr, "host: cannot create a Lua state\n");
        return 2;
    }
    open_modules(L);
    if (luaL_loadfile(L, argv[argi]) != LUA_OK) {
        fprintf(stderr, "host: %s\n", lua_tostring(L, -1));
        lua_close(L);
        return 2;
    }
    for (nargs = 0; argi + 1 + nargs < argc; nargs++)
        lua_pushstring(L, argv[argi + 1 + nargs]);
    if (call(L, nargs, 1) != LUA_OK || !lua_istable(L, -1)) {
        fprintf(stderr, "host: %s\n",
                lua_isstring(L, -1) ? lua_tostring(L, -1) : "the script did not return a table");
        lua_close(L);
        return 2;
    }
    app = lua_gettop(L);

    /* One second of empty frames first: how steady the loop is without the
     * query, on this machine at this moment (the figure to compare with). */
    run_frames(L, 0, 60, &idle);
    start = now_seconds();
    if (run_frames(L, app, (long)(max_seconds / frame_budget), &busy) != 0) {
        lua_close(L);
        return 2;
    }
    finished = busy.finished;

    printf("frames: %ld in %.2f s with the query in flight (budget %.1f ms a frame)\n", busy.frames,
           now_seconds() - start, frame_budget * 1000.0);
    print_stats("idle loop, no query", &idle);
    print_stats("query in flight", &busy);

    lua_getfield(L, app, "report");
    if (call(L, 0, 1) != LUA_OK || !lua_istable(L, -1)) {
        fprintf(stderr, "host: report: %s\n",
                lua_isstring(L, -1) ? lua_tostring(L, -1) : "not a table");
        lua_close(L);
        return 2;
    }
    {
        long received = field_integer(L, -1, "received");
        long expected = field_integer(L, -1, "expected");
        long distinct = field_integer(L, -1, "distinct");
        lua_getfield(L, -1, "error");
        if (!lua_isnil(L, -1))
            printf("error: %s\n", luaL_tolstring(L, -1, NULL));
        printf("runs: %ld received, %ld distinct, %ld expected (client:count)\n", received,
               distinct, expected);
        snprintf(what, sizeof what, "every run received once (%ld of %ld)", distinct, expected);
        check(finished && expected > 0 && received == expected && distinct == expected, what);
    }
    snprintf(what, sizeof what, "worst frame %.1f ms < %.1f ms while the query is in flight",
             busy.worst_period * 1000.0, max_frame * 1000.0);
    check(busy.frames > 1 && busy.worst_period < max_frame, what);
    printf("%d passed, %d failed\n", passed, failed);
    lua_close(L);
    return failed ? 1 : 0;
}
