/* Two threads, each with its own lua_State, read pages from the test server
 * through prefect.core at the same time. What this guards: libcurl's global
 * set-up happens once however many states load the module (pthread_once),
 * and nothing in the core is shared between states.
 *
 * usage: threads API_URL   (package.cpath must find prefect/core.so:
 *        set LUA_CPATH, as tools/ctest.sh does)
 * Prints one line per check and then "N passed, N failed"; exits non-zero
 * when a check failed. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#define THREADS 2
#define PAGES 5

/* Reads PAGES pages through one session (blocking next), then one page with
 * poll; returns the number of runs seen and the ids' checksum. */
static const char *const thread_chunk =
    "local url, pages = ...\n"
    "local core = require('prefect.core')\n"
    "local s = core.session{ timeout = 30 }\n"
    "local runs, sum = 0, 0\n"
    "local function add(run)\n"
    "  runs = runs + 1\n"
    "  for i = 1, #run.id do sum = (sum * 31 + run.id:byte(i)) % 1000000007 end\n"
    "end\n"
    "for page = 0, pages - 1 do\n"
    "  local req = assert(s:request{ method = 'POST', url = url .. '/task_runs/filter',\n"
    "    headers = { 'Content-Type: application/json' },\n"
    "    body = string.format('{\"limit\": 50, \"offset\": %d}', page * 50),\n"
    "    decoder = core.decoder{ fields = { 'id' } } })\n"
    "  local status = assert(req:response())\n"
    "  assert(status == 200, 'status ' .. tostring(status))\n"
    "  while true do\n"
    "    local run, err = req:next()\n"
    "    if run == nil then assert(not err, err and err.message) break end\n"
    "    add(run)\n"
    "  end\n"
    "end\n"
    "local req = assert(s:request{ method = 'POST', url = url .. '/task_runs/filter',\n"
    "  headers = { 'Content-Type: application/json' }, body = '{\"limit\": 50}',\n"
    "  decoder = core.decoder{ fields = { 'id' } } })\n"
    "repeat\n"
    "  local list, done = req:poll(100)\n"
    "  assert(list, type(done) == 'table' and done.message)\n"
    "  for _, run in ipairs(list) do add(run) end\n"
    "until done\n"
    "s:close()\n"
    "return runs, sum\n";

struct thread_result {
    const char *url;
    pthread_barrier_t *start;
    int ok;
    long runs;
    long sum;
    char error[512];
};

static void *thread_main(void *arg)
{
    struct thread_result *res = arg;
    lua_State *L = luaL_newstate();
    if (!L) {
        snprintf(res->error, sizeof res->error, "luaL_newstate failed");
        pthread_barrier_wait(res->start);
        return NULL;
    }
    luaL_openlibs(L);
    if (luaL_loadstring(L, thread_chunk) != LUA_OK) {
        snprintf(res->error, sizeof res->error, "%s", lua_tostring(L, -1));
        pthread_barrier_wait(res->start);
        lua_close(L);
        return NULL;
    }
    lua_pushstring(L, res->url);
    lua_pushinteger(L, PAGES);
    /* Both states start their requests together. */
    pthread_barrier_wait(res->start);
    if (lua_pcall(L, 2, 2, 0) != LUA_OK) {
        snprintf(res->error, sizeof res->error, "%s", lua_tostring(L, -1));
    } else {
        res->ok = 1;
        res->runs = (long)lua_tointeger(L, -2);
        res->sum = (long)lua_tointeger(L, -1);
    }
    lua_close(L);
    return NULL;
}

static int passed, failed;

static void check(int ok, const char *what, const char *detail)
{
    if (ok) {
        passed++;
        printf("ok     %s\n", what);
    } else {
        failed++;
        printf("FAILED %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    }
}

int main(int argc, char **argv)
{
    pthread_t threads[THREADS];
    struct thread_result results[THREADS];
    pthread_barrier_t start;
    int i;

    if (argc != 2) {
        fprintf(stderr, "usage: %s API_URL\n", argv[0]);
        return 2;
    }
    pthread_barrier_init(&start, NULL, THREADS);
    for (i = 0; i < THREADS; i++) {
        memset(&results[i], 0, sizeof results[i]);
        results[i].url = argv[1];
        results[i].start = &start;
        if (pthread_create(&threads[i], NULL, thread_main, &results[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 2;
        }
    }
    for (i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&start);

    for (i = 0; i < THREADS; i++) {
        char what[64];
        snprintf(what, sizeof what, "thread %d reads its pages", i + 1);
        check(results[i].ok, what, results[i].error);
        snprintf(what, sizeof what, "thread %d sees %d runs", i + 1, (PAGES + 1) * 50);
        check(results[i].runs == (PAGES + 1) * 50, what, NULL);
    }
    check(results[0].ok && results[1].ok && results[0].sum == results[1].sum,
          "both threads see the same runs", NULL);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
