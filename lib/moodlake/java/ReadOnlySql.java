package moodlake;

import java.util.Set;

import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.catalyst.plans.logical.Command;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;

import scala.Function1;
import scala.collection.Iterator;
import scala.runtime.AbstractFunction1;
import scala.runtime.BoxedUnit;

/**
 * A Spark session extension that makes every session of its application read-only.
 *
 * <p>MoodLake passes it to the JDBC (Thrift) server only ({@code spark.sql.extensions}), so that
 * analysts' connections can query the lakehouse but never change it; the nightly jobs, which are
 * other Spark applications, keep writing. A check rule looks at every analysed plan before it
 * runs: queries (SELECT, WITH, VALUES, time travel) pass; of the commands, which Spark runs
 * eagerly (INSERT, DELETE, UPDATE, MERGE, CREATE, DROP, ALTER, TRUNCATE, OPTIMIZE, VACUUM,
 * ADD JAR, CACHE, ANALYZE, ...), only an allowlist of read-only ones passes: SHOW..., DESCRIBE...,
 * EXPLAIN, SET, RESET and USE. Anything else fails analysis, so nothing of it is executed.
 */
public final class ReadOnlySql extends AbstractFunction1<SparkSessionExtensions, BoxedUnit> {

    /** Read-only commands, by simple class name (besides every Show* and Describe* command). */
    static final Set<String> ALLOWED = Set.of(
        "ExplainCommand", "SetCommand", "ResetCommand", "SetCatalogAndNamespace",
        "SetNamespaceCommand", "SetCatalogCommand");

    /** The error every refused statement raises (the Thrift server sends its message to the client). */
    public static final class ReadOnlyException extends RuntimeException {
        ReadOnlyException(String message) {
            super(message);
        }
    }

    static boolean allowed(LogicalPlan node) {
        if (!(node instanceof Command)) {
            return true;
        }
        String name = node.getClass().getSimpleName();
        return name.startsWith("Show") || name.startsWith("Describe") || ALLOWED.contains(name);
    }

    /** The first node of {@code plan} (root first) that is not allowed, or null. */
    static LogicalPlan refused(LogicalPlan plan) {
        if (!allowed(plan)) {
            return plan;
        }
        Iterator<LogicalPlan> it = plan.children().iterator();
        while (it.hasNext()) {
            LogicalPlan found = refused(it.next());
            if (found != null) {
                return found;
            }
        }
        return null;
    }

    static final class Check extends AbstractFunction1<LogicalPlan, BoxedUnit> {
        @Override
        public BoxedUnit apply(LogicalPlan plan) {
            LogicalPlan bad = refused(plan);
            if (bad != null) {
                throw new ReadOnlyException(
                    "[MOODLAKE_READ_ONLY] this SQL server is read-only: " + bad.nodeName()
                    + " is not allowed (only queries, SHOW, DESCRIBE, EXPLAIN, SET and USE); "
                    + "tables change through MoodLake's jobs. SQLSTATE: 42000");
            }
            return BoxedUnit.UNIT;
        }
    }

    @Override
    public BoxedUnit apply(SparkSessionExtensions extensions) {
        extensions.injectCheckRule(new AbstractFunction1<SparkSession, Function1<LogicalPlan, BoxedUnit>>() {
            @Override
            public Function1<LogicalPlan, BoxedUnit> apply(SparkSession session) {
                return new Check();
            }
        });
        return BoxedUnit.UNIT;
    }
}
